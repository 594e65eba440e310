// placeholder: CUDA kernel comes next
