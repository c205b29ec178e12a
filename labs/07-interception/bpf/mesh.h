/* Lab 07, part B — what the lab's BPF programs share (given: read it, do not change it).
 *
 * The journey of one connection of the app, and which program sees it:
 *   1. connect4 (yours): the app calls connect(10.77.7.3:8080). Remember that
 *      destination under the socket's cookie, then send the connection to Envoy's
 *      outbound port 127.0.0.1:15001 instead.
 *   2. sockops (given): the connection is established; its local port is known now.
 *      Move the destination from the cookie to that port.
 *   3. getsockopt (given): Envoy accepted the connection and asks for SO_ORIGINAL_DST,
 *      as it would under iptables. The peer's port finds the destination.
 */
#ifndef MESH_H
#define MESH_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ENVOY_UID 1337            /* the sidecar's uid: its own connects must not be redirected */
#define OUTBOUND_PORT 15001       /* Envoy's outbound listener, on 127.0.0.1 */
#define LOCALHOST 0x7f000001      /* 127.0.0.1, host byte order */

/* A destination as connect() saw it: address and port in network byte order. */
struct origin {
    __u32 ip;
    __u16 port;
    __u16 pad;
};

/* socket cookie (bpf_get_socket_cookie) -> where the app meant to go; written by connect4 */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, __u64);
    __type(value, struct origin);
} mesh_by_cookie SEC(".maps");

/* local port of the app's connection (host byte order) -> where it meant to go */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, struct origin);
} mesh_by_port SEC(".maps");

#endif
