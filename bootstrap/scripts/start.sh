#!/bin/sh
# ExecStart of quackmesh.service: runs the node with the settings of /etc/quackmesh/node.toml and
# the keystore password that prestart.sh left in /run/quackmesh (never on a command line).
set -eu
if [ -f /run/quackmesh/keystore-password ]; then
  QUACKMESH_KEYSTORE_PASSWORD=$(cat /run/quackmesh/keystore-password)
  export QUACKMESH_KEYSTORE_PASSWORD
fi
exec /usr/local/bin/quackmesh node --config /etc/quackmesh/node.toml
