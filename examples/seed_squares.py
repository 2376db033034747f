# The seed's first program, with only `import ray` changed to `import rayipy as ray`.
import rayipy as ray
ray.init()

@ray.remote
def f(x):
    return x * x

futures = [f.remote(i) for i in range(4)]
print(ray.get(futures)) # [0, 1, 4, 9]
