# Sourced by the bench scripts: ElasticMQ (SQS) and DynamoDB Local from Maven Central, cached
# in $BENCH_CACHE, started on loopback. Callers keep the pids in PIDS and kill them on exit.
# Define PIDS=() before sourcing. Needs java and mvn; `bench_emulators_available` says whether both are here.
BENCH_ROOT="${BENCH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
BENCH_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/tracking-operator/bench"
mkdir -p "$BENCH_CACHE"

bench_fetch() { # $1 = profile of bench/worker/pom.xml (elasticmq | dynamodb)
  [ -n "$(ls "$BENCH_CACHE/$1"/*.jar 2>/dev/null)" ] && return 0
  echo "bench: fetching $1 from Maven Central into $BENCH_CACHE/$1" >&2
  mvn -B -q -f "$BENCH_ROOT/bench/worker/pom.xml" -P "$1" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$BENCH_CACHE/$1" >"$BENCH_CACHE/mvn-$1.log" 2>&1
}

bench_wait_port() { # $1 = port, $2 = name (its log is $BENCH_CACHE/$2*.log)
  for _ in $(seq 1 120); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.5
  done
  echo "bench: $2 did not start; see $BENCH_CACHE/$2*.log" >&2; return 1
}

bench_emulators_available() {
  command -v java >/dev/null && command -v mvn >/dev/null && bench_fetch elasticmq && bench_fetch dynamodb
}

bench_start_elasticmq() { # $1 = port; strict SQS limits, as AWS has them
  local conf="$BENCH_CACHE/elasticmq-$1.conf"
  cat >"$conf" <<CONF
include classpath("application.conf")
node-address { protocol = http, host = 127.0.0.1, port = $1, context-path = "" }
rest-sqs { enabled = true, bind-port = $1, bind-hostname = "127.0.0.1", sqs-limits = strict }
rest-stats { enabled = false }
CONF
  java -Dconfig.file="$conf" -cp "$BENCH_CACHE/elasticmq/*" org.elasticmq.server.Main \
       >"$BENCH_CACHE/elasticmq-$1.log" 2>&1 & PIDS+=($!)
  bench_wait_port "$1" elasticmq
}

bench_start_dynamodb() { # $1 = port, then extra DynamoDB Local flags (e.g. -sharedDb)
  local port="$1"; shift
  (cd "$BENCH_CACHE/dynamodb" && exec java -Djava.library.path="$BENCH_CACHE/dynamodb" \
       -cp "$BENCH_CACHE/dynamodb/*" software.amazon.dynamodb.services.local.main.ServerRunner \
       -inMemory -port "$port" "$@") >"$BENCH_CACHE/dynamodb-$port.log" 2>&1 & PIDS+=($!)
  bench_wait_port "$port" dynamodb
}
