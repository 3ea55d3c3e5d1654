/* Ends what attention_ops.h defines, so that the next instruction set can define it again. */
#undef vf
#undef vfu
#undef vi
#undef LD
#undef ST
#undef BC
#undef INLINE
#undef ROUND_UP
