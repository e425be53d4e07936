# Sourced by the benchmarks (bench/worker/run.sh, bench/soak/run.sh): fetches ElasticMQ and
# DynamoDB Local from Maven Central into a cache, and starts them and moto on loopback ports.
# Config and log files are named by port, so benchmarks on other ports do not clobber them.
# The caller owns cleanup: every started process id is appended to its PIDS array.

BENCH_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/tracking-operator/bench"
BENCH_POM="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/worker/pom.xml"
mkdir -p "$BENCH_CACHE"

emulators_fetch() { # $1 = profile (elasticmq | dynamodb)
  [ -n "$(ls "$BENCH_CACHE/$1"/*.jar 2>/dev/null)" ] && return 0
  echo "bench: fetching $1 from Maven Central into $BENCH_CACHE/$1" >&2
  mvn -B -q -f "$BENCH_POM" -P "$1" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$BENCH_CACHE/$1" >"$BENCH_CACHE/mvn-$1.log" 2>&1
}

# Java and Maven from Debian's packages when missing (root and apt-get needed; a benchmark,
# unlike `make test`, may take the time).
emulators_install() {
  command -v java >/dev/null && command -v mvn >/dev/null && return 0
  command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] || return 1
  echo "bench: installing java and maven (Debian packages)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      default-jre-headless maven; } >"$BENCH_CACHE/apt.log" 2>&1
}

# True when java and mvn exist (or could be installed) and both jars are (or could be) cached.
emulators_available() {
  emulators_install && command -v java >/dev/null && command -v mvn >/dev/null \
    && emulators_fetch elasticmq && emulators_fetch dynamodb
}

wait_port() { # $1 = port, $2 = name (its log: $BENCH_CACHE/<name>-<port>.log), $3 = its pid
  for _ in $(seq 1 120); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    # Died: usually "address in use" because a client connection held the port as its
    # ephemeral source port for a moment (these ports are in Linux's ephemeral range).
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
    sleep 0.5
  done
  echo "bench: $2 did not start; see $BENCH_CACHE/$2-$1.log" >&2; return 1
}

start_moto() { # $1 = port
  local bin
  bin="$(ls -d "${XDG_CACHE_HOME:-$HOME/.cache}"/tracking-operator/moto-*/bin/moto_server 2>/dev/null | tail -1)"
  "${bin:-moto_server}" -H 127.0.0.1 -p "$1" >"$BENCH_CACHE/moto-$1.log" 2>&1 & PIDS+=($!)
  wait_port "$1" moto
}

# Starts `$2 $1` up to three times, for a port briefly taken by another process's connection.
with_retries() { # $1 = port, $2 = start function, $3 = name
  for _ in 1 2 3; do
    "$2" "$1"
    wait_port "$1" "$3" "${PIDS[-1]}" && return 0
    sleep 2
  done
  echo "bench: $3 did not start; see $BENCH_CACHE/$3-$1.log" >&2; return 1
}

start_elasticmq() { with_retries "$1" launch_elasticmq elasticmq; }
start_dynamodb() { with_retries "$1" launch_dynamodb dynamodb; }

launch_elasticmq() { # $1 = port
  local conf="$BENCH_CACHE/elasticmq-$1.conf"
  cat >"$conf" <<CONF
include classpath("application.conf")
node-address { protocol = http, host = 127.0.0.1, port = $1, context-path = "" }
rest-sqs { enabled = true, bind-port = $1, bind-hostname = "127.0.0.1", sqs-limits = strict }
rest-stats { enabled = false }
CONF
  java -Dconfig.file="$conf" -cp "$BENCH_CACHE/elasticmq/*" org.elasticmq.server.Main \
       >"$BENCH_CACHE/elasticmq-$1.log" 2>&1 & PIDS+=($!)
}

launch_dynamodb() { # $1 = port; in memory, one database for every access key and region
  (cd "$BENCH_CACHE/dynamodb" && exec java -Djava.library.path="$BENCH_CACHE/dynamodb" \
       -cp "$BENCH_CACHE/dynamodb/*" software.amazon.dynamodb.services.local.main.ServerRunner \
       -inMemory -sharedDb -port "$1") >"$BENCH_CACHE/dynamodb-$1.log" 2>&1 & PIDS+=($!)
}
