/* Ends what attention_ops.h defines, so that the next instruction set can define it again. */
#undef vf
#undef vfu
#undef vi
#undef vu
#undef vh
#undef LD
#undef ST
#undef BC
#undef BC8
#undef INLINE
#undef ROUND_UP
#undef LANES8
#undef LANES
#undef LANE_XOR
#undef LANE_LO
#undef LANE_HI
