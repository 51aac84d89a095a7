// test_attn_tol.c — runs, on the CPU, the proof that the CUDA attention check's tolerance
// (tests/gpu/attn_tol.h, used by tests/gpu/test_ops.c) is sharp: on the CPU twin, an
// off-by-one in every rule (window W+1 and W-1, sinks S+1, group G+1, full attention one key
// past the diagonal) moves outputs or log-sum-exps at least twice as far as the bound allows,
// for the test's windows of 1..90 and around the default sink rule's 1020. test_ops repeats it
// before comparing the device with the twin.
#include "../gpu/attn_tol.h"
#include "ls_test.h"

int main(void) {
    for (unsigned seed = 1; seed <= 3; seed++) { // test_ops's random windows, 1..90
        int missed = attn_tol_selfcheck(seed * 7919u, 1, 90, seed == 1);
        TEST_COND(missed == 0, "seed %u, windows 1..90: the bound missed %d off-by-one rule(s)", seed, missed);
    }
    // around the default sink rule (4 + 1020), where the former absolute tolerances (3e-2 on
    // outputs, 2e-2 on lse) see none of them
    int missed = attn_tol_selfcheck(31337u, 1000, 1040, true);
    TEST_COND(missed == 0, "windows 1000..1040: the bound missed %d off-by-one rule(s)", missed);
    return TEST_REPORT("test_attn_tol");
}
