#!/bin/sh
# Mounts the node's EBS data volume at /var/lib/quackmesh (run once by cloud-init; fstab keeps it
# across reboots). Usage: mount-data.sh VOLUME_ID. Waits up to 5 minutes for the attachment
# (Terraform attaches the volume after the instance exists), formats it only when it holds no
# file system (a replaced instance finds the previous node's data), mounts it by UUID.
set -eu
vol=$(echo "$1" | tr -d -)
mnt=/var/lib/quackmesh
dev=""
i=0
while [ $i -lt 300 ]; do
  # Nitro instances show EBS volumes as NVMe devices named after the volume id; Xen ones as xvdf.
  for c in "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_$vol" /dev/xvdf /dev/sdf; do
    if [ -b "$c" ]; then dev=$(readlink -f "$c"); break 2; fi
  done
  sleep 1
  i=$((i + 1))
done
[ -n "$dev" ] || { echo "mount-data: volume $1 not attached after 5 minutes" >&2; exit 1; }
if ! blkid "$dev" >/dev/null 2>&1; then
  echo "mount-data: formatting $dev (new volume)"
  mkfs.ext4 -q -L quackmesh-data "$dev"
fi
uuid=$(blkid -s UUID -o value "$dev")
mkdir -p "$mnt"
if ! grep -q "UUID=$uuid" /etc/fstab; then
  echo "UUID=$uuid $mnt ext4 defaults,nofail,noatime 0 2" >>/etc/fstab
fi
mountpoint -q "$mnt" || mount "$mnt"
echo "mount-data: $dev (UUID $uuid) on $mnt"
