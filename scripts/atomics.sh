#!/usr/bin/env bash
# Atomic read-modify-write operations per request (reference counts, locks), side by side, in
# the instructions bench's binary: callgrind counts each instruction's executions, and the
# binary's disassembly tells which are locked (`lock`-prefixed, or `xchg` with memory). Each is
# one instruction in scripts/instructions.sh but waits for the core's pending stores
# (`cargo bench --bench verify -- stage/atomic` times one). libc's own (malloc) are not counted.
# Installs valgrind if needed. Usage: scripts/atomics.sh (SIDES="auth pipeline" for some sides)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/instructions-binary.sh
out=target/atomics
mkdir -p "$out"
objdump -d -C --no-show-raw-insn "$bin" >"$out/binary.dis"
for side in ${SIDES:-floor_checked auth floor_limits pipeline}; do
  for n in 1000 3000; do
    valgrind --tool=callgrind --dump-instr=yes --dump-line=no --compress-pos=no \
      --callgrind-out-file="$out/$side.$n.out" "$bin" "$side" "$n" >/dev/null 2>&1
  done
  python3 - "$out" "$side" <<'EOF'
import re, sys
out, side = sys.argv[1], sys.argv[2]
locked, function = set(), {}
current = None
for line in open(f"{out}/binary.dis"):
    m = re.match(r"^([0-9a-f]+) <(.*)>:", line)
    if m:
        current = m.group(2)
        continue
    m = re.match(r"^\s+([0-9a-f]+):\s+(lock\b|xchg\s+\S*\()", line)
    if m:
        address = int(m.group(1), 16)
        locked.add(address)
        function[address] = current

def counts(path):
    """Executions per instruction address of the binary's (callgrind's uncompressed output;
    addresses of other objects, libraries, are their own and are left out)."""
    found, address, call_site = {}, 0, False
    objects, in_binary = {}, False
    for line in open(path):
        # Objects are named once, by `ob=` or a call's `cob=`, and then referred to by number.
        m = re.match(r"c?ob=\((\d+)\)\s*(.*)", line.strip())
        if m:
            if m.group(2):
                objects[m.group(1)] = m.group(2)
            if line.startswith("ob="):
                in_binary = "/deps/instructions-" in objects.get(m.group(1), "")
            continue
        if line.startswith("calls="):
            call_site = True  # the next line is the call's inclusive cost, not an execution
            continue
        fields = line.split()
        if not fields or not fields[0].startswith("0x"):
            continue
        address = int(fields[0], 16)
        if call_site:
            call_site = False
            continue
        if in_binary and len(fields) > 1:
            found[address] = found.get(address, 0) + int(fields[1])
    return found

small, large = counts(f"{out}/{side}.1000.out"), counts(f"{out}/{side}.3000.out")
per = {}
for address, n in large.items():
    if address in locked:
        d = (n - small.get(address, 0)) / 2000
        if d > 0.01:
            per[function[address]] = per.get(function[address], 0) + d
print(f"{side}: {sum(per.values()):.2f} atomic operations per request")
for name, d in sorted(per.items(), key=lambda x: -x[1]):
    print(f"  {d:5.2f} {name[:110]}")
EOF
done
