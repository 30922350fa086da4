// sm100 sparse int8 configurations: see sm100_sparse.inc.
#define SS_OPERAND int8_t
#define SS_FAMILY_FN sparse_int8
#include "sm100_sparse.inc"
