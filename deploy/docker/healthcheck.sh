#!/bin/sh
# livegate-healthcheck: the container health check of the livegate images (curl only, no
# extra tools).
#
#   livegate-healthcheck http URL         exit 0 when URL answers 2xx (e.g. /readyz)
#   livegate-healthcheck grpc HOST:PORT   exit 0 when grpc.health.v1.Health/Check answers
#                                         SERVING for the whole server (service "")
#
# The gRPC check speaks plain-text HTTP/2 (h2c) with curl: the request is one gRPC message
# frame holding an empty HealthCheckRequest (5 zero bytes: not compressed, length 0), the
# answer for SERVING is the frame 00 00000002 0801 (field 1 `status` = 1). NOT_SERVING
# (auth draining), UNKNOWN, an error status or no answer all exit 1.
set -eu

usage() {
  echo "usage: livegate-healthcheck http URL | grpc HOST:PORT" >&2
  exit 2
}

[ $# -eq 2 ] || usage
timeout=${LIVEGATE_HEALTHCHECK_TIMEOUT:-3}

case $1 in
  http)
    exec curl --silent --show-error --fail --max-time "$timeout" --output /dev/null "$2"
    ;;
  grpc)
    answer=$(printf '\000\000\000\000\000' |
      curl --silent --show-error --max-time "$timeout" --http2-prior-knowledge \
        --header 'content-type: application/grpc' --header 'te: trailers' \
        --data-binary @- "http://$2/grpc.health.v1.Health/Check" |
      od -An -v -tx1 | tr -d ' \n')
    if [ "$answer" = "00000000020801" ]; then
      exit 0
    fi
    echo "gRPC health of $2: not SERVING (answer: ${answer:-none})" >&2
    exit 1
    ;;
  *)
    usage
    ;;
esac
