"""GPU pool components: node pools (managed node groups or Karpenter), Karpenter, GPU software.

The pure logic they use (scheduling contract, fit math) lives in the `gpu_pools` domain package.
"""
