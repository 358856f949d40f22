#!/bin/sh
# gen-tls.sh DIR SAN: a throwaway CA and a NATS server certificate for SAN (an openssl
# subjectAltName list, e.g. "IP:127.0.0.1,DNS:localhost" or "DNS:nats"), written to DIR with
# cert-manager's names: ca.crt (public, mode 644), tls.crt and tls.key (mode 600); the CA's
# key stays in DIR/ca.key (mode 600).
# Existing files are kept, so the clients' CA stays valid across restarts. POSIX sh and
# openssl only: scripts/start.sh runs it, and so does the compose `nats-tls` container.
#
# For production use certificates from your own CA or cert-manager instead (deploy/README.md).
set -eu
dir=$1
san=$2
umask 077
mkdir -p "$dir"
cd "$dir"
if [ -s ca.crt ] && [ -s tls.crt ] && [ -s tls.key ]; then
  exit 0
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout ca.key -out ca.crt -days 3650 -subj "/CN=livegate NATS CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout tls.key -out tls.csr -subj "/CN=livegate NATS" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
  "$san" >tls.ext
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
  -out tls.crt -days 825 -extfile tls.ext 2>/dev/null
rm -f tls.csr tls.ext ca.srl
# The CA certificate is public (every client needs it); the keys are not.
chmod 644 ca.crt
chmod 600 ca.key tls.crt tls.key
