"""Programs that meet one resource limit each, shared by the sandbox tests and the Judge0 SDK
tests (the same limit, asked for in LiveCode's units and in Judge0's)."""

from __future__ import annotations

# C: each frame holds 1 KiB the compiler cannot drop, so 4000 frames need about 4 MiB of stack.
# Prints 1 when it got to the bottom and back.
DEEP_RECURSION_C = """#include <stdio.h>
#include <string.h>
static int depth(int n) {
    volatile char frame[1024];
    memset((char *)frame, n & 0x7f, sizeof frame);
    return n == 0 ? frame[0] : depth(n - 1) + frame[1];
}
int main(void) { printf("%d\\n", depth(4000) > 0); return 0; }
"""

# C: writes a 2 MiB file; C does not ignore SIGXFSZ (Python does, and gets EFBIG instead).
WRITE_2_MIB_C = """#include <stdio.h>
int main(void) {
    static char block[65536];
    FILE *f = fopen("f", "wb");
    for (int i = 0; i < 32; i++) { fwrite(block, 1, sizeof block, f); fflush(f); }
    puts("wrote 2 MiB");
    return 0;
}
"""

# Python: about 1.2 s of CPU (and the interpreter's start-up), then a line that shows it was not
# killed.
SPIN_1_2_S_PY = """import time
end = time.process_time() + 1.2
while time.process_time() < end:
    pass
print("done", flush=True)
"""
