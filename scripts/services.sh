#!/usr/bin/env bash
# Starts and stops private RabbitMQ, Redis and MariaDB instances on free
# loopback ports inside one directory, without touching system services.
#
#   scripts/services.sh start DIR [rabbitmq] [redis] [mariadb]   (default: all)
#   scripts/services.sh stop DIR          stops whatever DIR holds (idempotent)
#   scripts/services.sh restart-rabbitmq DIR | stop-redis DIR | start-redis DIR
#   scripts/services.sh ctl DIR <rabbitmqctl args...>
#
# After start, DIR/env holds shell exports (COMET_AMQP_URL, COMET_REDIS_*,
# RABBITMQ_NODE, MYSQL_*). Processes are only ever stopped by the pids this
# script recorded, never by name, so a system instance is never touched.
set -euo pipefail

RABBIT_BIN=/usr/lib/rabbitmq/bin
# A cold RabbitMQ start takes several seconds on a loaded 2-core machine;
# two minutes leaves room for a noisy neighbour without hanging forever.
RABBIT_WAIT_S=120
REDIS_WAIT_S=20
MARIADB_WAIT_S=60
MYSQL_USER_NAME=comet
MYSQL_DB_NAME=whmcs_test

die() { echo "services: $*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# pid_alive PID: true while the process exists (zombies of others count too,
# which is fine: we only wait for our own daemons to disappear).
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# wait_pid_gone PID SECONDS: polls until the pid is gone; false on timeout.
wait_pid_gone() {
  local pid=$1 n=$(( $2 * 10 ))
  while pid_alive "$pid" && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
  ! pid_alive "$pid"
}

# kill_pidfile FILE: TERM then, after 20 s, KILL the pid recorded in FILE.
kill_pidfile() {
  local f=$1 pid
  [ -s "$f" ] || return 0
  pid=$(tr -dc '0-9' < "$f")
  if pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_pid_gone "$pid" 20; then
      kill -KILL "$pid" 2>/dev/null || true
      wait_pid_gone "$pid" 5 || true
    fi
  fi
  rm -f "$f"
}

log_tail() {
  local f
  for f in "$@"; do
    [ -f "$f" ] || continue
    echo "---- tail of $f" >&2
    tail -n 30 "$f" >&2
  done
}

# free_ports N: prints N distinct free loopback ports. All sockets stay bound
# until every port is chosen so the kernel cannot hand out one port twice.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# ---------------------------------------------------------------- RabbitMQ

# rabbit_env DIR: the private environment every rabbitmq command needs.
rabbit_env() {
  local d=$1/rabbitmq
  # shellcheck disable=SC1091
  . "$d/ports"
  export HOME=$d/home
  export RABBITMQ_NODENAME=$NODE
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$AMQP_PORT
  export RABBITMQ_DIST_PORT=$DIST_PORT
  export RABBITMQ_MNESIA_BASE=$d/mnesia
  export RABBITMQ_LOG_BASE=$d/log
  export RABBITMQ_PID_FILE=$d/rabbit.pid
  export RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf
  export RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins
  export RABBITMQ_CONF_ENV_FILE=$d/rabbitmq-env.conf
  export RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config
  export ERL_EPMD_PORT=$EPMD_PORT
  export ERL_EPMD_ADDRESS=127.0.0.1
}

rabbit_ctl() {
  local dir=$1; shift
  ( rabbit_env "$dir"; "$RABBIT_BIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" "$@" )
}

# rabbit_node_start DIR: starts the node (epmd must run) and waits for it.
rabbit_node_start() {
  local dir=$1 d=$1/rabbitmq t0 n
  t0=$(now)
  rm -f "$d/rabbit.pid"
  ( rabbit_env "$dir"
    setsid "$RABBIT_BIN/rabbitmq-server" >>"$d/log/server.out" 2>&1 </dev/null & )
  n=$((RABBIT_WAIT_S * 10))
  while [ ! -s "$d/rabbit.pid" ] && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
  [ -s "$d/rabbit.pid" ] || { echo "services: rabbitmq wrote no pid file" >&2; return 1; }
  # await_startup fails fast until the node has registered with epmd: retry.
  while ! rabbit_ctl "$dir" -q await_startup --timeout 10 >/dev/null 2>&1; do
    if ! pid_alive "$(tr -dc '0-9' < "$d/rabbit.pid")"; then
      echo "services: rabbitmq died during start" >&2; return 1
    fi
    if awk -v a="$t0" -v b="$(now)" -v m="$RABBIT_WAIT_S" 'BEGIN { exit !(b - a > m) }'; then
      echo "services: rabbitmq not ready after ${RABBIT_WAIT_S}s" >&2; return 1
    fi
    sleep 0.5
  done
  echo "services: rabbitmq ready on 127.0.0.1:$AMQP_PORT ($(elapsed "$t0") s)"
}

rabbit_start() {
  local dir=$1 d=$1/rabbitmq t0 n
  t0=$(now)
  mkdir -p "$d/home" "$d/mnesia" "$d/log"
  if [ ! -f "$d/home/.erlang.cookie" ]; then
    head -c 30 /dev/urandom | base64 | tr -dc 'A-Za-z' > "$d/home/.erlang.cookie"
    chmod 400 "$d/home/.erlang.cookie"
  fi
  printf 'listeners.tcp.1 = 127.0.0.1:%s\nloopback_users = none\n' "$AMQP_PORT" > "$d/rabbitmq.conf"
  [ -f "$d/enabled_plugins" ] || echo '[].' > "$d/enabled_plugins"
  : > "$d/rabbitmq-env.conf"
  echo '[].' > "$d/advanced.config"
  # Our own epmd first: otherwise the node spawns one we cannot stop cleanly.
  setsid epmd -port "$EPMD_PORT" -address 127.0.0.1 >>"$d/log/epmd.out" 2>&1 </dev/null &
  echo $! > "$d/epmd.pid"
  n=100
  while ! epmd -port "$EPMD_PORT" -names >/dev/null 2>&1; do
    n=$((n - 1)); [ "$n" -gt 0 ] || { echo "services: epmd did not answer" >&2; return 1; }
    sleep 0.1
  done
  rabbit_node_start "$dir" || return 1
}

# rabbit_node_stop DIR: stops the node only (epmd stays for a restart).
rabbit_node_stop() {
  local dir=$1 d=$1/rabbitmq pid=""
  [ -s "$d/rabbit.pid" ] && pid=$(tr -dc '0-9' < "$d/rabbit.pid")
  if pid_alive "$pid"; then
    rabbit_ctl "$dir" -q stop >/dev/null 2>&1 || true
    if ! wait_pid_gone "$pid" 30; then
      kill -KILL "$pid" 2>/dev/null || true
      wait_pid_gone "$pid" 5 || true
    fi
  fi
  rm -f "$d/rabbit.pid"
}

rabbit_stop() {
  local dir=$1 d=$1/rabbitmq
  [ -d "$d" ] || return 0
  rabbit_node_stop "$dir"
  kill_pidfile "$d/epmd.pid"
}

# ------------------------------------------------------------------- Redis

redis_start() {
  local dir=$1 d=$1/redis t0 n
  t0=$(now)
  mkdir -p "$d"
  # --save '' keeps it fast; stop-redis saves explicitly so start-redis
  # comes back with the same data (fault tests).
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$d" --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/redis.log" \
    </dev/null >/dev/null 2>&1 || { echo "services: redis-server failed" >&2; return 1; }
  n=$((REDIS_WAIT_S * 10))
  while [ "$(timeout 2 redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" != "PONG" ]; do
    # Redis daemonized already: a failed bind only shows in its log.
    grep -q 'aborting' "$d/redis.log" 2>/dev/null && { echo "services: redis aborted" >&2; return 1; }
    n=$((n - 1)); [ "$n" -gt 0 ] || { echo "services: redis not ready" >&2; return 1; }
    sleep 0.1
  done
  # The pid file is written right after the socket listens.
  n=50
  while [ ! -s "$d/redis.pid" ] && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
  echo "services: redis ready on 127.0.0.1:$REDIS_PORT ($(elapsed "$t0") s)"
}

# redis_stop DIR [save]: SHUTDOWN (saving when asked), then by pid.
redis_stop() {
  local d=$1/redis mode=${2:-nosave} pid=""
  [ -d "$d" ] || return 0
  [ -s "$d/redis.pid" ] && pid=$(tr -dc '0-9' < "$d/redis.pid")
  if pid_alive "$pid"; then
    redis-cli -p "$REDIS_PORT" shutdown "$mode" >/dev/null 2>&1 || true
    wait_pid_gone "$pid" 10 || true
  fi
  kill_pidfile "$d/redis.pid"
}

# ----------------------------------------------------------------- MariaDB

mariadb_start() {
  local dir=$1 d=$1/mysql t0 n pw
  t0=$(now)
  mkdir -p "$d"
  if [ ! -d "$d/data/mysql" ]; then
    mariadb-install-db --no-defaults --user=root --datadir="$d/data" \
      --auth-root-authentication-method=socket --skip-test-db \
      >"$d/install.log" 2>&1 || { echo "services: mariadb-install-db failed" >&2; log_tail "$d/install.log"; return 1; }
  fi
  setsid mariadbd --no-defaults --user=root --datadir="$d/data" \
    --socket="$d/mysqld.sock" --port="$MYSQL_PORT" --bind-address=127.0.0.1 \
    --pid-file="$d/mysqld.pid" --log-error="$d/mysqld.log" \
    --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
    --skip-name-resolve --innodb-flush-log-at-trx-commit=2 \
    >>"$d/mysqld.out" 2>&1 </dev/null &
  local mpid=$!
  n=$((MARIADB_WAIT_S * 10))
  while ! mariadb-admin --no-defaults --socket="$d/mysqld.sock" -uroot ping >/dev/null 2>&1; do
    pid_alive "$mpid" || { echo "services: mariadbd exited" >&2; return 1; }
    n=$((n - 1)); [ "$n" -gt 0 ] || { echo "services: mariadb not ready" >&2; return 1; }
    sleep 0.1
  done
  if [ ! -s "$d/password" ]; then
    head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$d/password"
    chmod 600 "$d/password"
  fi
  pw=$(cat "$d/password")
  mariadb --no-defaults --socket="$d/mysqld.sock" -uroot <<EOF || { echo "services: mariadb user setup failed" >&2; return 1; }
CREATE DATABASE IF NOT EXISTS $MYSQL_DB_NAME;
CREATE USER IF NOT EXISTS '$MYSQL_USER_NAME'@'127.0.0.1' IDENTIFIED BY '$pw';
CREATE USER IF NOT EXISTS '$MYSQL_USER_NAME'@'localhost' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON $MYSQL_DB_NAME.* TO '$MYSQL_USER_NAME'@'127.0.0.1';
GRANT ALL PRIVILEGES ON $MYSQL_DB_NAME.* TO '$MYSQL_USER_NAME'@'localhost';
FLUSH PRIVILEGES;
EOF
  echo "services: mariadb ready on 127.0.0.1:$MYSQL_PORT ($(elapsed "$t0") s)"
}

mariadb_stop() {
  local d=$1/mysql
  [ -d "$d" ] || return 0
  # TERM is mariadbd's clean shutdown; kill_pidfile waits for it.
  kill_pidfile "$d/mysqld.pid"
}

# ---------------------------------------------------------------- commands

# load_ports DIR: the ports chosen at the first start, if any.
load_ports() {
  # shellcheck disable=SC1091
  [ -f "$1/ports" ] && . "$1/ports"
  [ -f "$1/rabbitmq/ports" ] && . "$1/rabbitmq/ports"
  return 0
}

write_env() {
  local dir=$1 f
  f=$dir/env.tmp
  {
    echo "# written by scripts/services.sh start; source it"
    if [ -f "$dir/rabbitmq/ports" ]; then
      echo "export COMET_AMQP_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT/"
      echo "export RABBITMQ_NODE=$NODE"
      echo "export COMET_RABBITMQ_DIR=$dir"
      echo "export ERL_EPMD_PORT_PRIVATE=$EPMD_PORT"
      echo "# rabbitmqctl: scripts/services.sh ctl $dir <args>"
    fi
    if [ -d "$dir/redis" ]; then
      echo "export COMET_REDIS_HOST=127.0.0.1"
      echo "export COMET_REDIS_PORT=$REDIS_PORT"
    fi
    if [ -s "$dir/mysql/password" ]; then
      echo "export MYSQL_HOST=127.0.0.1"
      echo "export MYSQL_PORT=$MYSQL_PORT"
      echo "export MYSQL_USER=$MYSQL_USER_NAME"
      echo "export MYSQL_PASSWORD=$(cat "$dir/mysql/password")"
      echo "export MYSQL_DATABASE=$MYSQL_DB_NAME"
      echo "export MYSQL_SOCKET=$dir/mysql/mysqld.sock"
    fi
  } > "$f"
  chmod 600 "$f"
  mv "$f" "$dir/env"
}

cmd_start() {
  local dir=$1; shift
  local want=("$@") svc p pids=() names=() rc=0 i
  [ ${#want[@]} -gt 0 ] || want=(rabbitmq redis mariadb)
  for svc in "${want[@]}"; do
    case $svc in rabbitmq|redis|mariadb) ;; *) die "unknown service '$svc'";; esac
  done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  load_ports "$dir"
  # One batch of free ports; each is kept in DIR so restarts reuse it.
  read -r -a p <<< "$(free_ports 5)"
  if [ ! -f "$dir/ports" ]; then
    printf 'REDIS_PORT=%s\nMYSQL_PORT=%s\n' "${p[0]}" "${p[1]}" > "$dir/ports"
  fi
  if [[ " ${want[*]} " == *" rabbitmq "* ]] && [ ! -f "$dir/rabbitmq/ports" ]; then
    mkdir -p "$dir/rabbitmq"
    printf 'AMQP_PORT=%s\nDIST_PORT=%s\nEPMD_PORT=%s\nNODE=comet%s@localhost\n' \
      "${p[2]}" "${p[3]}" "${p[4]}" "${p[2]}" > "$dir/rabbitmq/ports"
  fi
  load_ports "$dir"
  for svc in "${want[@]}"; do
    case $svc in
      rabbitmq) pid_alive "$(cat "$dir/rabbitmq/rabbit.pid" 2>/dev/null)" && { echo "services: rabbitmq already running"; continue; } ;;
      redis) pid_alive "$(cat "$dir/redis/redis.pid" 2>/dev/null)" && { echo "services: redis already running"; continue; } ;;
      mariadb) pid_alive "$(cat "$dir/mysql/mysqld.pid" 2>/dev/null)" && { echo "services: mariadb already running"; continue; } ;;
    esac
    # Started in parallel: a cold RabbitMQ dominates, the others hide behind it.
    case $svc in
      rabbitmq) rabbit_start "$dir" & ;;
      redis) redis_start "$dir" & ;;
      mariadb) mariadb_start "$dir" & ;;
    esac
    pids+=($!); names+=("$svc")
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      rc=1
      case ${names[$i]} in
        rabbitmq) log_tail "$dir/rabbitmq/log/server.out" "$dir/rabbitmq/log/$NODE.log" ;;
        redis) log_tail "$dir/redis/redis.log" ;;
        mariadb) log_tail "$dir/mysql/mysqld.log" ;;
      esac
      echo "services: ${names[$i]} failed to start" >&2
    fi
  done
  write_env "$dir"
  [ "$rc" -eq 0 ] || { echo "services: start failed; run: $0 stop $dir" >&2; exit 1; }
  echo "services: env in $dir/env"
}

cmd_stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  load_ports "$dir"
  rabbit_stop "$dir" & local a=$!
  redis_stop "$dir" & local b=$!
  mariadb_stop "$dir" & local c=$!
  wait "$a" "$b" "$c" || true
  echo "services: stopped $dir"
}

[ $# -ge 2 ] || die "usage: $0 start|stop|restart-rabbitmq|stop-redis|start-redis|ctl DIR [...]"
cmd=$1; dir=$2; shift 2
case $cmd in
  start) cmd_start "$dir" "$@" ;;
  stop) cmd_stop "$dir" ;;
  restart-rabbitmq)
    [ -f "$dir/rabbitmq/ports" ] || die "no rabbitmq in $dir"
    dir=$(cd "$dir" && pwd); load_ports "$dir"
    rabbit_node_stop "$dir"
    echo "services: rabbitmq stopped"
    rabbit_node_start "$dir" || { log_tail "$dir/rabbitmq/log/server.out"; exit 1; } ;;
  stop-redis)
    [ -f "$dir/ports" ] || die "no redis in $dir"
    dir=$(cd "$dir" && pwd); load_ports "$dir"
    redis_stop "$dir" save; echo "services: redis stopped" ;;
  start-redis)
    [ -f "$dir/ports" ] || die "no redis in $dir"
    dir=$(cd "$dir" && pwd); load_ports "$dir"
    redis_start "$dir" || { log_tail "$dir/redis/redis.log"; exit 1; } ;;
  ctl)
    [ -f "$dir/rabbitmq/ports" ] || die "no rabbitmq in $dir"
    dir=$(cd "$dir" && pwd); load_ports "$dir"
    rabbit_ctl "$dir" "$@" ;;
  *) die "unknown command '$cmd'" ;;
esac
