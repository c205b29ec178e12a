/* Lab 07, part B — given. Once the app's redirected connection is established, its
 * local port is known: file the original destination under that port, where the
 * getsockopt program (answering Envoy) can find it. */
#include "mesh.h"

SEC("sockops")
int mesh_sockops(struct bpf_sock_ops *ops)
{
    if (ops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB || ops->family != 2 /* AF_INET */)
        return 1;
    __u64 cookie = bpf_get_socket_cookie(ops);
    struct origin *origin = bpf_map_lookup_elem(&mesh_by_cookie, &cookie);
    if (!origin)
        return 1;                         /* not a connection connect4 redirected */
    struct origin copy = *origin;
    __u32 port = ops->local_port;         /* host byte order */
    bpf_map_update_elem(&mesh_by_port, &port, &copy, BPF_ANY);
    bpf_map_delete_elem(&mesh_by_cookie, &cookie);
    return 1;
}

char LICENSE[] SEC("license") = "GPL";
