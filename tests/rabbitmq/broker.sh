#!/usr/bin/env bash
# A throw-away RabbitMQ node on 127.0.0.1 for the integration tests (a CTest fixture).
#
#   broker.sh start DIR [tls]  starts epmd and a node with everything under DIR, waits until it
#                          accepts AMQP connections; fails loudly if a port is taken or the node
#                          does not come up. Interrupted (SIGINT, SIGTERM, SIGHUP), it stops what
#                          it started. With "tls", the node also listens for TLS (see below).
#   broker.sh stop DIR     stops the node and epmd started in DIR, by pid (also when the node
#                          died or a start was interrupted)
#   broker.sh ctl DIR ARGS runs rabbitmqctl against that node (fails at once when its epmd is
#                          not running)
#   broker.sh kill DIR     SIGKILLs the node (not epmd): a crash, for the fault tests
#   broker.sh restart DIR  starts the node again on its old data (after kill), waits for AMQP
#   broker.sh run DIR PROGRAM [ARGS]
#                          runs PROGRAM with the node's coordinates in its environment:
#                          KINCIR_RABBITMQ_URI (amqp://guest:guest@127.0.0.1:PORT),
#                          KINCIR_RABBITMQ_CTL ("broker.sh ctl DIR"), KINCIR_RABBITMQ_NODE_SH and
#                          KINCIR_RABBITMQ_NODE_DIR (for kill and restart) and, when the node was
#                          started with TLS, KINCIR_RABBITMQ_TLS_PORT and KINCIR_RABBITMQ_TLS_DIR;
#                          an argument @URI@ is replaced by that URI. The CTest commands go through
#                          this, so that the ports are read when the tests run, not when CMake
#                          configured the build.
#
# Ports (environment, read whenever the script runs): KINCIR_RABBITMQ_PORT (AMQP, 5673),
# KINCIR_RABBITMQ_DIST_PORT (25673), KINCIR_RABBITMQ_EPMD_PORT (4370). TLS: on
# KINCIR_RABBITMQ_TLS_PORT when it is set and not empty, otherwise (with "tls") on the AMQP port
# + 1000, with a CA, a server certificate (for "localhost" only) and a client certificate that
# openssl generates under DIR/tls, and SASL EXTERNAL (rabbitmq_auth_mechanism_ssl, the user named
# by the certificate's common name). Works as root and as an ordinary user.
set -euo pipefail

usage="usage: broker.sh start|stop|ctl|kill|restart|run DIR"
cmd=${1:?$usage}
dir=${2:?$usage}
amqp_port=${KINCIR_RABBITMQ_PORT:-5673}
dist_port=${KINCIR_RABBITMQ_DIST_PORT:-25673}
epmd_port=${KINCIR_RABBITMQ_EPMD_PORT:-4370}
tls_port=${KINCIR_RABBITMQ_TLS_PORT:-}
if [ "$cmd" = start ] && [ "${3:-}" = tls ] && [ -z "$tls_port" ]; then
  tls_port=$((amqp_port + 1000))
fi
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
bin=/usr/lib/rabbitmq/bin

node_env() {
  export HOME="$dir/home"
  export RABBITMQ_NODENAME=rabbit@localhost
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$amqp_port"
  export RABBITMQ_DIST_PORT="$dist_port"
  export RABBITMQ_MNESIA_BASE="$dir/mnesia"
  export RABBITMQ_LOG_BASE="$dir/log"
  export RABBITMQ_PLUGINS_EXPAND_DIR="$dir/plugins-expand"
  export RABBITMQ_SCHEMA_DIR="$dir/schema"
  export RABBITMQ_GENERATED_CONFIG_DIR="$dir/config"
  export ERL_CRASH_DUMP="$dir/log/erl_crash.dump"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$dir/rabbitmq"  # rabbitmq.conf
  export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
  export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
  export RABBITMQ_PID_FILE="$dir/rabbit.pid"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export ERL_EPMD_PORT="$epmd_port"
  export RABBITMQ_CTL_DIST_PORT_MIN=$((dist_port + 10000))
  export RABBITMQ_CTL_DIST_PORT_MAX=$((dist_port + 10010))
  # Never let Erlang start an epmd of its own: ours runs on loopback and is stopped by pid.
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_CTL_ERL_ARGS="-start_epmd false"
}

port_free() {  # port_free PORT: nothing listens on 127.0.0.1:PORT
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

ours() {  # ours PID WORD: PID is alive and its command line contains WORD (pids get reused)
  { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null | grep -qF -- "$2"
}

stop_pid() {  # stop_pid FILE WORD: SIGTERM the process whose pid FILE holds, then SIGKILL its group
  local file=$1 word=$2 pid i member
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  rm -f "$file"
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  if ours "$pid" "$word"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # setsid made it a process group leader: what is left of its group that runs on DIR (the Erlang
  # VM, also when its launcher died earlier) goes too.
  for member in $(pgrep -g "$pid" 2>/dev/null || true); do
    if ours "$member" "$dir"; then kill -KILL "$member" 2>/dev/null || true; fi
  done
}

stop_all() {  # the node (the Erlang VM, then its launcher) and epmd started in DIR
  stop_pid "$dir/rabbit.pid" beam  # the Erlang VM itself: SIGTERM stops it in about a second
  stop_pid "$dir/node.pid" rabbitmq-server
  stop_pid "$dir/epmd.pid" epmd
}

interrupted() {  # a signal during start: stop what was started (pid files, or children not yet in one)
  trap - INT TERM HUP
  echo "broker.sh: interrupted; stopping the node and epmd started in $dir" >&2
  local children
  children=$(jobs -p)
  stop_all
  # shellcheck disable=SC2086
  [ -z "$children" ] || kill -KILL $children 2>/dev/null || true
  exit 130
}

make_certs() {  # make_certs DIR: a CA, a server certificate for localhost, a client certificate
  local d=$1
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=kincir-test-ca
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost
    printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
      -extfile server.ext
    openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=kincir-client
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 \
      -extfile client.ext
    chmod 644 ./*.pem ./*.key
  ) >"$d/openssl.log" 2>&1 || { echo "broker.sh: openssl failed:" >&2; cat "$d/openssl.log" >&2; exit 1; }
}

start() {
  if [ ! -x "$bin/rabbitmq-server" ]; then
    echo "broker.sh: rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)" >&2
    exit 1
  fi
  # A node (or only its epmd) left over from an interrupted run in this directory goes first.
  stop_all
  trap interrupted INT TERM HUP
  for p in "$amqp_port" "$dist_port" "$epmd_port" $tls_port; do
    if ! port_free "$p"; then
      echo "broker.sh: port $p on 127.0.0.1 is already in use; set KINCIR_RABBITMQ_PORT," \
           "KINCIR_RABBITMQ_DIST_PORT or KINCIR_RABBITMQ_EPMD_PORT to free ports" >&2
      exit 1
    fi
  done
  rm -rf "$dir"
  mkdir -p "$dir/home" "$dir/mnesia" "$dir/log" "$dir/plugins-expand" "$dir/schema" "$dir/config"
  chmod 700 "$dir/home"
  echo "[]." >"$dir/enabled_plugins"
  : >"$dir/rabbitmq-env.conf"
  echo "[]." >"$dir/advanced.config"
  cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$amqp_port
loopback_users = none
log.console = false
log.file.level = warning
CONF
  if [ -n "$tls_port" ]; then
    make_certs "$dir/tls"
    echo "$tls_port" >"$dir/tls/port"
    cat >>"$dir/rabbitmq.conf" <<CONF
listeners.ssl.1 = 127.0.0.1:$tls_port
ssl_options.cacertfile = $dir/tls/ca.pem
ssl_options.certfile = $dir/tls/server.pem
ssl_options.keyfile = $dir/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
CONF
    # SASL EXTERNAL: the user is the client certificate's common name.
    echo "[rabbitmq_auth_mechanism_ssl]." >"$dir/enabled_plugins"
  fi
  node_env
  # epmd in the foreground (no -daemon) so that its pid is ours to stop.
  setsid epmd -address 127.0.0.1 -port "$epmd_port" </dev/null >"$dir/log/epmd.log" 2>&1 &
  echo $! >"$dir/epmd.pid"
  local i
  for i in $(seq 1 50); do
    port_free "$epmd_port" || break
    sleep 0.1
  done
  start_node
}

start_node() {
  local i
  RABBITMQ_ALLOW_INPUT= setsid "$bin/rabbitmq-server" </dev/null >>"$dir/log/node.out" 2>&1 &
  echo $! >"$dir/node.pid"
  for i in $(seq 1 600); do
    if ! kill -0 "$(cat "$dir/node.pid")" 2>/dev/null; then
      echo "broker.sh: the node exited while starting; its output:" >&2
      tail -n 30 "$dir/log/node.out" >&2 || true
      stop_all
      exit 1
    fi
    if ! port_free "$amqp_port"; then
      echo "broker.sh: RabbitMQ accepts AMQP on 127.0.0.1:$amqp_port (after $((i / 10)) s)"
      return 0
    fi
    sleep 0.1
  done
  echo "broker.sh: the node did not accept connections within 60 s; its output:" >&2
  tail -n 30 "$dir/log/node.out" >&2 || true
  stop
  exit 1
}

stop() {
  stop_all
  echo "broker.sh: stopped"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  kill)
    # The whole process group of the node (the VM and its helpers); epmd keeps running.
    if [ -f "$dir/node.pid" ]; then
      kill -KILL -- "-$(cat "$dir/node.pid")" 2>/dev/null || kill -KILL "$(cat "$dir/node.pid")" 2>/dev/null || true
    fi
    if [ -f "$dir/rabbit.pid" ]; then kill -KILL "$(cat "$dir/rabbit.pid")" 2>/dev/null || true; fi
    for i in $(seq 1 100); do
      port_free "$amqp_port" && port_free "$dist_port" && break
      sleep 0.1
    done
    rm -f "$dir/rabbit.pid"
    echo "broker.sh: killed"
    ;;
  restart)
    node_env
    start_node
    ;;
  ctl)
    shift 2
    # Without the node's epmd there is no node to talk to, and rabbitmqctl would start an epmd
    # daemon of its own on that port (it ignores -start_epmd false), which nothing stops.
    if ! { [ -f "$dir/epmd.pid" ] && ours "$(cat "$dir/epmd.pid")" epmd; }; then
      echo "broker.sh: no node runs in $dir (its epmd is not running)" >&2
      exit 69
    fi
    node_env
    exec "$bin/rabbitmqctl" -n rabbit@localhost "$@"
    ;;
  run)
    shift 2
    [ $# -gt 0 ] || { echo "usage: broker.sh run DIR PROGRAM [ARGS]" >&2; exit 2; }
    uri="amqp://guest:guest@127.0.0.1:$amqp_port"
    export KINCIR_RABBITMQ_URI="$uri" KINCIR_RABBITMQ_CTL="$self ctl $dir" KINCIR_RABBITMQ_NODE_SH="$self" \
      KINCIR_RABBITMQ_NODE_DIR="$dir"
    if [ -f "$dir/tls/port" ]; then
      KINCIR_RABBITMQ_TLS_PORT=$(cat "$dir/tls/port")
      export KINCIR_RABBITMQ_TLS_PORT KINCIR_RABBITMQ_TLS_DIR="$dir/tls"
    fi
    args=()
    for a in "$@"; do args+=("${a//@URI@/$uri}"); done
    exec "${args[@]}"
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
