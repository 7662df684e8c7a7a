#!/bin/sh
# ExecStartPre of quackmesh.service, run as root: fetches the keystore password from SSM
# Parameter Store ($QMBOOT_KEYSTORE_PARAMETER, a SecureString) into /run/quackmesh, readable
# by the quackmesh user only, and on the first start creates the node's encrypted keystore in
# the data dir (print its address with: sudo -u quackmesh quackmesh wallet address --data-dir
# /var/lib/quackmesh, password from the same parameter). Does nothing for a bootstrap-only node.
set -eu
[ "${QMBOOT_NEEDS_KEY:-0}" = 1 ] || exit 0
run=/run/quackmesh
data=/var/lib/quackmesh
umask 077
aws ssm get-parameter --region "$QMBOOT_REGION" --name "$QMBOOT_KEYSTORE_PARAMETER" \
  --with-decryption --query Parameter.Value --output text >"$run/keystore-password.new"
[ -s "$run/keystore-password.new" ] || { echo "prestart: empty keystore password" >&2; exit 1; }
mv "$run/keystore-password.new" "$run/keystore-password"
chown quackmesh:quackmesh "$run/keystore-password"
chmod 0400 "$run/keystore-password"
if [ ! -f "$data/keystore.json" ]; then
  echo "prestart: creating the node's keystore in $data (fund its address, see bootstrap/README.md)"
  runuser -u quackmesh -- /usr/local/bin/quackmesh wallet new --data-dir "$data" \
    --password-file "$run/keystore-password"
fi
