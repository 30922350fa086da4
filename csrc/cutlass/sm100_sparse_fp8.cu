// sm100 sparse fp8 configurations: see sm100_sparse.inc.
#define SS_OPERAND cutlass::float_e4m3_t
#define SS_FAMILY_FN sparse_fp8
#include "sm100_sparse.inc"
