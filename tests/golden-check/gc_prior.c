/* gc_prior.c - golden handlers (stubs until this family lands). */
#include "gc.h"

int gc_diffusion_schedule(gc_case *c) { return gc_fail(c, "not implemented yet"); }
int gc_prior_forward(gc_case *c) { return gc_fail(c, "not implemented yet"); }
int gc_prior_sample(gc_case *c) { return gc_fail(c, "not implemented yet"); }
