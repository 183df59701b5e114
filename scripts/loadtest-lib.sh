# Shared by scripts/loadtest.sh and scripts/loadtest-multibuffer.sh (sourced, not run):
# starting and stopping the server under test, and one load-test point.
#
# The caller sets: bin (release binaries), addr, results (JSON lines), log (text report),
# ossl_secs; these functions set and use `server` (the server's pid).

server=""

# Pinning. With 4 or more cores the server gets two of them (LOADTEST_SERVER_CPUS, default
# 0-1, a `taskset -c` list), the load generator the others (LOADTEST_CLIENT_CPUS), and
# `openssl speed` runs on the server's: `-multi 2` and the server then measure the same two
# cores, and the generator takes none of their time. With fewer cores, or LOADTEST_PIN=0,
# nothing is pinned and all three share the machine (say so beside the figures).
ncpu="$(nproc)"
if [[ "${LOADTEST_PIN:-auto}" != 0 && -z "${LOADTEST_SERVER_CPUS:-}" && "$ncpu" -ge 4 ]]; then
    LOADTEST_SERVER_CPUS="0-1"
    LOADTEST_CLIENT_CPUS="${LOADTEST_CLIENT_CPUS:-2-$((ncpu - 1))}"
fi
server_pin=()
client_pin=()
ossl_pin=()
if [[ -n "${LOADTEST_SERVER_CPUS:-}" ]]; then
    server_pin=(taskset -c "$LOADTEST_SERVER_CPUS")
    ossl_pin=(--openssl-cpus "$LOADTEST_SERVER_CPUS")
fi
if [[ -n "${LOADTEST_CLIENT_CPUS:-}" ]]; then
    client_pin=(taskset -c "$LOADTEST_CLIENT_CPUS")
fi

# One line for the report: where the server, the generator and `openssl speed` ran.
pinning() {
    if [[ -n "${LOADTEST_SERVER_CPUS:-}" ]]; then
        echo "pinning: server and openssl speed on CPUs $LOADTEST_SERVER_CPUS, load generator on ${LOADTEST_CLIENT_CPUS:-any}"
    else
        echo "pinning: none (server, load generator and openssl speed share the $ncpu cores)"
    fi
}

# Stops the server under test (TERM, then KILL after 5 s); safe to call twice.
stop_server() {
    if [[ -n "$server" ]] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server" 2>/dev/null || true
    fi
    server=""
}

# start_server LOGFILE [VAR=value ...]: starts `cdnsign serve --config loadtest/config.toml`
# with those environment variables, output to LOGFILE, and waits (at most 10 s) until it
# listens on 127.0.0.1:50151. Exits the script, printing the log, if it does not.
start_server() {
    local server_log="$1"
    shift
    env "$@" "${server_pin[@]}" "$bin/cdnsign" serve --config loadtest/config.toml >"$server_log" 2>&1 &
    server=$!
    for i in $(seq 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/50151) 2>/dev/null; then return 0; fi
        if ! kill -0 "$server" 2>/dev/null; then
            echo "cdnsign exited; see $server_log" >&2
            cat "$server_log" >&2
            exit 1
        fi
        [[ $i == 100 ]] && { echo "cdnsign did not listen within 10 s" >&2; exit 1; }
        sleep 0.1
    done
}

# run LABEL [loadtest flags...]: one point against the server, appended to the report.
run() {
    local label="$1"
    shift
    "${client_pin[@]}" "$bin/cdnsign-loadtest" run --addr "$addr" --server-pid "$server" \
        --label "$label" --json-out "$results" --openssl-seconds "$ossl_secs" "${ossl_pin[@]}" "$@" \
        | tee -a "$log" \
        || echo "  (this run reported errors; see above)" | tee -a "$log"
}
