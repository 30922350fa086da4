// sm100 dense fp8 configurations: see sm100_dense.inc.
#define SS_OPERAND cutlass::float_e4m3_t
#define SS_FAMILY_FN dense_fp8
#include "sm100_dense.inc"
