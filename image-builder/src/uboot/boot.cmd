# Cairn's A/B boot with boot counting (DESIGN §2), for U-Boot's distro boot, which finds it
# as /boot.scr on the boot partition and sets devtype, devnum and distro_bootpart.
#
# Its state is a U-Boot environment file in two copies, cairn/env.0 and cairn/env.1
# (cairn_api::disk::uboot_state): the valid copy (size and CRC) with the higher cairn_gen
# is in force; a write goes to the other copy with cairn_gen + 1, so a power cut while it
# writes leaves the copy in force as it was. Numbers are hexadecimal, as setexpr writes.
#   cairn_slot        the slot to boot: a or b
#   cairn_upgrade     1 while cairn_slot is on trial
#   cairn_tries       boots the trial has left; cairn_tried: boots it has had
#   cairn_bootargs_a  slot A's kernel command line (cairn_bootargs_b: B's); absent while the
#                     slot may not boot
# A trial boot is counted on disk before its kernel is loaded. With no tries left, or when
# the count cannot be written, the other slot boots: rollback needs nothing of the system.

setenv cairn_env_size 0x1000
setenv cairn_env_vars cairn_gen cairn_slot cairn_upgrade cairn_tries cairn_tried cairn_bootargs_a cairn_bootargs_b

# The copy in force: both are read at kernel_addr_r (free until the kernel is loaded; env
# export clears U-Boot's whole environment size after it).
setenv cairn_copy none
for cairn_n in 0 1; do
  if load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} cairn/env.${cairn_n} && itest ${filesize} == ${cairn_env_size} && env import -c ${kernel_addr_r} ${cairn_env_size} cairn_gen; then
    if test "${cairn_copy}" = none || itest ${cairn_gen} -gt ${cairn_copy_gen}; then
      setenv cairn_copy ${cairn_n}
      setenv cairn_copy_gen ${cairn_gen}
    fi
  else
    echo "cairn-boot: cairn/env.${cairn_n} is missing or damaged"
  fi
done

if test "${cairn_copy}" = none; then
  echo "cairn-boot: no valid environment (cairn/env.0, cairn/env.1): cannot choose a slot"
else
  load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} cairn/env.${cairn_copy}
  env import -c ${kernel_addr_r} ${cairn_env_size} ${cairn_env_vars}
  if test "${cairn_copy}" = 0; then setenv cairn_next_copy 1; else setenv cairn_next_copy 0; fi
  if test "${cairn_slot}" = a; then setenv cairn_other b; else setenv cairn_other a; fi

  setenv cairn_boot ${cairn_slot}
  if test "${cairn_upgrade}" = 1; then
    if itest ${cairn_tries} -gt 0; then
      setexpr cairn_tries ${cairn_tries} - 1
      setexpr cairn_tried ${cairn_tried} + 1
      setexpr cairn_gen ${cairn_gen} + 1
      if env export -c -s ${cairn_env_size} ${kernel_addr_r} ${cairn_env_vars} && fatwrite ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} cairn/env.${cairn_next_copy} ${cairn_env_size}; then
        echo "cairn-boot: slot ${cairn_slot}, trial, ${cairn_tries} tries left"
      else
        echo "cairn-boot: could not count the trial of ${cairn_slot}, booting ${cairn_other}"
        setenv cairn_boot ${cairn_other}
      fi
    else
      echo "cairn-boot: trial of ${cairn_slot} failed, booting ${cairn_other}"
      setenv cairn_boot ${cairn_other}
    fi
  else
    echo "cairn-boot: slot ${cairn_slot}"
  fi

  setenv bootargs
  if test "${cairn_boot}" = a; then setenv bootargs ${cairn_bootargs_a}; else setenv bootargs ${cairn_bootargs_b}; fi
  if test -z "${bootargs}"; then
    echo "cairn-boot: slot ${cairn_boot} has no kernel command line: it may not boot"
  elif load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} cairn/${cairn_boot}/vmlinuz && load ${devtype} ${devnum}:${distro_bootpart} ${ramdisk_addr_r} cairn/${cairn_boot}/initramfs.zst; then
    setenv cairn_initrd ${ramdisk_addr_r}:${filesize}
    # The device tree the firmware (or QEMU) passed, unless the slot brings its own.
    setenv cairn_fdt ${fdtcontroladdr}
    if test -e ${devtype} ${devnum}:${distro_bootpart} cairn/${cairn_boot}/dtb; then
      load ${devtype} ${devnum}:${distro_bootpart} ${fdt_addr_r} cairn/${cairn_boot}/dtb && setenv cairn_fdt ${fdt_addr_r}
    fi
    echo "cairn-boot: booting slot ${cairn_boot}: ${bootargs}"
    # An arm64 Image; booti fails on a zImage (or is absent on 32-bit U-Boot): bootz.
    booti ${kernel_addr_r} ${cairn_initrd} ${cairn_fdt}
    bootz ${kernel_addr_r} ${cairn_initrd} ${cairn_fdt}
  fi
  echo "cairn-boot: slot ${cairn_boot} did not start"
  # A trial that did not start counts as a failed try: reset to count the next one.
  if test "${cairn_boot}" = "${cairn_slot}" && test "${cairn_upgrade}" = 1; then
    reset
  fi
fi
