// sm100 dense int8 configurations: see sm100_dense.inc.
#define SS_OPERAND int8_t
#define SS_FAMILY_FN dense_int8
#include "sm100_dense.inc"
