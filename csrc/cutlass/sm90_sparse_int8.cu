// sm90 sparse int8 configurations: see sm90_sparse.inc.
#define SS_OPERAND int8_t
#define SS_FAMILY_FN sparse_int8
#include "sm90_sparse.inc"
