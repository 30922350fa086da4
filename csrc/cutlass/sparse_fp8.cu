// sparse fp8 configurations: see sparse_configs.inc.
#define SS_OPERAND cutlass::float_e4m3_t
#define SS_FAMILY_FN sparse_fp8
#include "sparse_configs.inc"
