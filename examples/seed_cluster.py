# The seed's third program, with only `import ray` changed to `import rayipy as ray`.
# Start the cluster first (docs/cluster.md), then put its address and password below:
#   rayipy start --head --node-ip-address 172.17.0.2          # on the head machine
#   rayipy start --address='172.17.0.2:6379' --redis-password='...'   # on each other one
from collections import Counter
import socket
import time

import rayipy as ray

ray.init(address='172.17.0.2:6379', _redis_password='5241590000000000')

print('''This cluster consists of
    {} nodes in total
    {} CPU resources in total
'''.format(len(ray.nodes()), ray.cluster_resources()['CPU']))

@ray.remote
def f():
    time.sleep(0.001)
    # Return IP address.
    return socket.gethostbyname(socket.gethostname())

object_ids = [f.remote() for _ in range(10000)]
ip_addresses = ray.get(object_ids)

print('Tasks executed')
for ip_address, num_tasks in Counter(ip_addresses).items():
    print('    {} tasks on {}'.format(num_tasks, ip_address))
