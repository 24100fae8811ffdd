"""Cloud adapters: the core's `Cloud` port over Apache libcloud.

- `live.clouds.base`: `LibcloudCloud`, the logic every provider shares (owner tags, node names, one
  list call, error translation, call records) and `STATE_MAP` (libcloud's NodeState -> CloudVmState);
- `live.clouds.ec2`: EC2 and EC2-compatible endpoints (moto); `live.clouds.openstack`: OpenStack Nova;
- `live.clouds.registry`: `PROVIDERS`, the table from a provider name in the YAML to its adapter,
  with drivers imported lazily;
- `live.clouds.config`: the clouds YAML file -> `CloudBinding(config, adapter)`s (`load_clouds`).
"""
