// sparse int8 configurations: see sparse_configs.inc.
#define SS_OPERAND int8_t
#define SS_FAMILY_FN sparse_int8
#include "sparse_configs.inc"
