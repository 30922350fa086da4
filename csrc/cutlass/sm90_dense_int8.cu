// sm90 dense int8 configurations: see sm90_dense.inc.
#define SS_OPERAND int8_t
#define SS_FAMILY_FN dense_int8
#include "sm90_dense.inc"
