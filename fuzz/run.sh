#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with the nightly
# toolchain, installing cargo-fuzz first if it is missing.
#   fuzz/run.sh [SECONDS] [TARGET...]
# Seeds: fuzz/seeds/<target>/ (committed, from real exchanges) are copied into
# the working corpus fuzz/corpus/<target>/ (not committed) before each run.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_codec session server node_message)

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo +nightly install cargo-fuzz --locked
fi

for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  if [ -d "seeds/$t" ]; then cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true; fi
  echo "== fuzz $t for ${seconds}s"
  log="$(mktemp)"
  status=0
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E "^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|SUMMARY)|panicked at|assertion" "$log" || true
  if [ "$status" -ne 0 ]; then
    echo "fuzz target $t failed (exit $status); last lines of its log:"
    tail -40 "$log"
    exit "$status"
  fi
  rm -f "$log"
done
