/*
 * Callgrind's client requests as plain functions, for bench/profile.py's
 * server to call through ctypes: Python cannot issue the magic instruction
 * sequences of <valgrind/callgrind.h> itself.  Outside valgrind every call
 * is a no-op.
 */
#include <valgrind/callgrind.h>

/* Start counting (the server runs with --instr-atstart=no, so that start-up
 * and the set-up of its connections go at valgrind's uninstrumented speed). */
void cgctl_start(void) { CALLGRIND_START_INSTRUMENTATION; }

/* Forget what was counted so far. */
void cgctl_zero(void) { CALLGRIND_ZERO_STATS; }

/* Write what was counted since the last zero to a new dump file. */
void cgctl_dump(void) { CALLGRIND_DUMP_STATS; }

/* Map the first MiB of the main thread's stack.  Valgrind cannot grow the
 * stack while it delivers a signal (it kills the program with "Can't extend
 * stack ... during signal delivery"), and select.select() keeps its three
 * descriptor tables on the stack: a signal interrupting it lands below
 * anything mapped so far.  Touched once at start-up, the pages stay mapped. */
void cgctl_grow_stack(void)
{
    volatile char pages[1 << 20];
    for (unsigned long i = 0; i < sizeof pages; i += 4096)
        pages[i] = 0;
}
