#!/usr/bin/env bash
# broker.sh for the fault-injection node of the ctest cases rabbitmq_fault.* (they kill and
# restart it, so it is not the integration tests' node). Its ports are read when it runs:
# KINCIR_RABBITMQ_FAULT_PORT (AMQP, 5674), KINCIR_RABBITMQ_FAULT_DIST_PORT (25674),
# KINCIR_RABBITMQ_FAULT_EPMD_PORT (4371); it never opens a TLS listener. Arguments as broker.sh's:
#
#   fault_node.sh start|stop|ctl|kill|restart|run DIR ...
#
# `run` hands the program broker.sh's environment for this node, so that the broker.sh kill and
# restart it calls (KINCIR_RABBITMQ_NODE_SH) and its rabbitmqctl reach this node too.
set -euo pipefail
export KINCIR_RABBITMQ_PORT=${KINCIR_RABBITMQ_FAULT_PORT:-5674}
export KINCIR_RABBITMQ_DIST_PORT=${KINCIR_RABBITMQ_FAULT_DIST_PORT:-25674}
export KINCIR_RABBITMQ_EPMD_PORT=${KINCIR_RABBITMQ_FAULT_EPMD_PORT:-4371}
export KINCIR_RABBITMQ_TLS_PORT=
exec "$(cd "$(dirname "$0")" && pwd)/broker.sh" "$@"
