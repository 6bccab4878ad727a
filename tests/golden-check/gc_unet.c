/* gc_unet.c - golden handlers (stubs until this family lands). */
#include "gc.h"

int gc_decoder_forward(gc_case *c) { return gc_fail(c, "not implemented yet"); }
int gc_decoder_sample(gc_case *c) { return gc_fail(c, "not implemented yet"); }
int gc_sr_resize(gc_case *c) { return gc_fail(c, "not implemented yet"); }
int gc_sr_forward(gc_case *c) { return gc_fail(c, "not implemented yet"); }
int gc_sr_sample(gc_case *c) { return gc_fail(c, "not implemented yet"); }
