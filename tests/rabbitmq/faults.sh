#!/usr/bin/env bash
# The fault-injection scenarios at full size (100 000 messages each by default), outside ctest:
# starts a throw-away node with broker.sh, runs every scenario of rabbitmq_fault_test (or the
# ones named), prints the figures, stops the node (also on failure).
#
#   tests/rabbitmq/faults.sh BUILD_DIR [MESSAGES] [SCENARIO...]
#
# Scenarios: cut close restart kill alarm stall block. Ports: KINCIR_RABBITMQ_FAULT_PORT (5684),
# KINCIR_RABBITMQ_FAULT_DIST_PORT (25684), KINCIR_RABBITMQ_FAULT_EPMD_PORT (4381).
set -euo pipefail

build=${1:?usage: faults.sh BUILD_DIR [MESSAGES] [SCENARIO...]}
messages=${2:-100000}
shift $(($# < 2 ? $# : 2))
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(cut close restart kill alarm stall block)

here=$(cd "$(dirname "$0")" && pwd)
binary="$build/tests/rabbitmq/rabbitmq_fault_test"
if [ ! -x "$binary" ]; then
  echo "faults.sh: $binary not found (build the target rabbitmq_fault_test)" >&2
  exit 1
fi
export KINCIR_RABBITMQ_PORT=${KINCIR_RABBITMQ_FAULT_PORT:-5684}
export KINCIR_RABBITMQ_DIST_PORT=${KINCIR_RABBITMQ_FAULT_DIST_PORT:-25684}
export KINCIR_RABBITMQ_EPMD_PORT=${KINCIR_RABBITMQ_FAULT_EPMD_PORT:-4381}
export KINCIR_RABBITMQ_TLS_PORT=  # no TLS listener (an exported one is another node's port)
dir="$build/tests/rabbitmq/rabbitmq-fault-node-full"
trap '"$here/broker.sh" stop "$dir" >/dev/null' EXIT
"$here/broker.sh" start "$dir"

export KINCIR_RABBITMQ_URI="amqp://guest:guest@127.0.0.1:$KINCIR_RABBITMQ_PORT"
export KINCIR_RABBITMQ_CTL="$here/broker.sh ctl $dir"
export KINCIR_RABBITMQ_NODE_SH="$here/broker.sh"
export KINCIR_RABBITMQ_NODE_DIR="$dir"
export KINCIR_FAULT_MESSAGES="$messages"
status=0
for s in "${scenarios[@]}"; do
  "$binary" "[$s]" || status=1
done
exit $status
