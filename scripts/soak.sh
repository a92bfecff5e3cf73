#!/usr/bin/env bash
# The long proofs, at full length (CI runs shortened versions of each):
#   - the deterministic simulation over more seeds, with every fault kind
#     (failed commits and crashes after the venue acted included);
#   - the 7-day compressed endurance run of `serve`, on the simulated market
#     and live through the local CLOB server;
#   - the nemesis (kill -9, database cuts, hostile strategies) over a longer run;
#   - the live nemesis (kill -9 and the local CLOB's venue-side faults: 429
#     storms, 5xx bursts, 425 and cancel-only windows, lost responses,
#     WebSocket stalls and drops, heartbeat loss, a FAILED trade) over a
#     longer run;
#   - the five-minute database outage.
# Prints each suite's wall time at the end. Needs PostgreSQL on 127.0.0.1:5432.
#
#   scripts/soak.sh                      # everything
#   POLYBOT_SOAK_SEED=N scripts/soak.sh  # replay one nemesis schedule (both nemeses)
set -uo pipefail
cd "$(dirname "$0")/.."

days=${POLYBOT_SOAK_DAYS:-7}
sim_seeds=${POLYBOT_SIM_SEEDS:-2000}
nemesis_events=${POLYBOT_NEMESIS_EVENTS:-30000}
live_nemesis_events=${POLYBOT_NEMESIS_LIVE_EVENTS:-20000}
declare -a names times results

suite() {
    local name=$1
    shift
    local start=$SECONDS
    echo "=== $name"
    if env "$@"; then results+=("ok"); else results+=("FAILED"); fi
    names+=("$name")
    times+=($((SECONDS - start)))
}

cargo build -p polybot-tests --tests || exit 1
suite "simulation ($sim_seeds seeds)" \
    POLYBOT_SIM_SEEDS="$sim_seeds" \
    cargo nextest run -p polybot-tests --test simulation --no-capture
suite "endurance ($days simulated days)" \
    POLYBOT_SOAK_DAYS="$days" \
    cargo nextest run -p polybot-tests --test endurance days_of --no-capture
suite "endurance live ($days simulated days)" \
    POLYBOT_SOAK_LIVE_HOURS=$((days * 24)) \
    cargo nextest run -p polybot-tests --test endurance live --no-capture
suite "nemesis ($nemesis_events events per strategy)" \
    POLYBOT_NEMESIS_EVENTS="$nemesis_events" \
    cargo nextest run -p polybot-tests --test nemesis --no-capture
suite "nemesis live ($live_nemesis_events events per strategy)" \
    POLYBOT_SOAK_SEED="${POLYBOT_SOAK_SEED:-$(date +%s%N)}" \
    POLYBOT_NEMESIS_LIVE_EVENTS="$live_nemesis_events" \
    cargo nextest run -p polybot-tests --test nemesis_live --no-capture
suite "database outage (300 s)" \
    POLYBOT_OUTAGE_SECS=300 \
    cargo nextest run -p polybot-tests --test database_loss --no-capture

echo
printf '%-50s %8s  %s\n' suite seconds result
for i in "${!names[@]}"; do
    printf '%-50s %8s  %s\n' "${names[$i]}" "${times[$i]}" "${results[$i]}"
done
for r in "${results[@]}"; do [ "$r" = ok ] || exit 1; done
