/* gc_tokenizer.c - golden handlers (stubs until this family lands). */
#include "gc.h"

int gc_clip_tokenizer(gc_case *c) { return gc_fail(c, "not implemented yet"); }
