// sm120 dense fp8 configurations (the Sm120 builders take no INT8): see sm120_dense.inc.
#define SS_OPERAND cutlass::float_e4m3_t
#define SS_FAMILY_FN dense_fp8
#include "sm120_dense.inc"
