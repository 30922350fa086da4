// dense fp8 configurations: see dense_configs.inc.
#define SS_OPERAND cutlass::float_e4m3_t
#define SS_FAMILY_FN dense_fp8
#include "dense_configs.inc"
