// dense int8 configurations: see dense_configs.inc.
#define SS_OPERAND int8_t
#define SS_FAMILY_FN dense_int8
#include "dense_configs.inc"
