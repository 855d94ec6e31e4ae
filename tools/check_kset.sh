#!/usr/bin/env bash
# tools/check_kset.sh PYTHON -- compile src/includes/kset.h's three variants
# (epoll, kqueue, none) with -Wall -Wextra -Werror, so the branches this
# machine does not build (kqueue on macOS/BSD, the Windows stubs) are at least
# checked for syntax and types.  The kqueue branch compiles against a minimal
# stand-in of <sys/event.h> in tools/kset-shim/ (its declarations only).
set -euo pipefail
py=${1:-python3}
inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/use.c" <<'C'
#include <Python.h>
#include "kset.h"
#ifndef EXPECT
#error EXPECT not set
#endif
#if CYA_KSET != EXPECT
#error kset.h chose another backend
#endif
int main(void)
{
    cya_kraw raw[4];
    cya_kevent ev[4];
    int k = cya_kset_open();
    int err = cya_kset_set(k, 0, 0, CYA_POLLIN | CYA_POLLOUT, 1u);
    err += cya_kset_check(k, 0, CYA_POLLIN, 1u);
    cya_kset_forget(k, 0);
    err += cya_kset_add_once(k, 0, 1u);
    return err + cya_kset_wait(k, raw, ev, 4, 0) + cya_kset_close(k);
}
C
flags=(-fsyntax-only -Wall -Wextra -Werror -Wno-unused-function -I src/includes -I "$inc")
gcc "${flags[@]}" -DEXPECT=1 "$tmp/use.c" && echo "kset.h: epoll branch ok"
gcc "${flags[@]}" -DEXPECT=2 -U__linux__ -D__APPLE__ -I tools/kset-shim "$tmp/use.c" \
  && echo "kset.h: kqueue branch ok"
gcc "${flags[@]}" -DEXPECT=0 -DCYA_NO_KSET "$tmp/use.c" && echo "kset.h: no kernel set ok"
