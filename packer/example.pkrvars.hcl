# The shape of a variables file for `packer build -var-file=...`. The values
# below are placeholders, not reviewed pins: put the commit, tags and SHA-256
# sums of the releases you have reviewed. CI validates the template with this
# file; a build with it stops at the first checksum.
bbb_install_commit = "0000000000000000000000000000000000000000"
bbb_install_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
scalelite_version  = "v1.8.5"
scalelite_sha256   = "0000000000000000000000000000000000000000000000000000000000000000"
efs_utils_version  = "v2.1.0"
efs_utils_sha256   = "0000000000000000000000000000000000000000000000000000000000000000"
alloy_version      = "1.21.2"
alloy_sha256       = "0000000000000000000000000000000000000000000000000000000000000000"
bbbnode_wheel      = "dist/bbbfleet-0.1.0-py3-none-any.whl"
