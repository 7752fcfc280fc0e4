# Sourced by scripts/instructions.sh and scripts/atomics.sh, from the repository's root: installs
# valgrind if needed, and sets `bin` to the instructions bench's binary (benches/instructions.rs),
# built with the bench profile.
if ! command -v valgrind >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind
fi
bin=$(cargo bench --bench instructions --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*instructions[^"]*"' | cut -d'"' -f4 | tail -1)
