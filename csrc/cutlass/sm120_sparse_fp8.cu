// sm120 sparse fp8 configurations (the Sm120 builders take no INT8): see sm120_sparse.inc.
#define SS_OPERAND cutlass::float_e4m3_t
#define SS_FAMILY_FN sparse_fp8
#include "sm120_sparse.inc"
