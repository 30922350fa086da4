// sm90 sparse fp8 configurations: see sm90_sparse.inc.
#define SS_OPERAND cutlass::float_e4m3_t
#define SS_FAMILY_FN sparse_fp8
#include "sm90_sparse.inc"
