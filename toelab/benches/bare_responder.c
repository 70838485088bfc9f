/* The bare responder's protocol (toelab/benches/bare_responder.py) with no interpreter: the floor of
 * any user-space endpoint on an AF_PACKET port, for `toelab bench engine`.
 *
 *     bare_responder IFACE IPV4-ADDRESS PORT RESPONSE     (prints "ready", exits on SIGTERM)
 *
 * Same socket as the engine's wire (PACKET_VNET_HDR, PACKET_IGNORE_OUTGOING, bound to IFACE), one
 * epoll wait, one recvmmsg and one write per turn, and no connection table: a SYN to PORT draws a
 * SYN-ACK with the MSS option (ISN a hash of the 4-tuple), any segment with payload draws one frame
 * with RESPONSE (the bytes the engine's HTTP service answers the loadgen's GET with, given by the
 * caller), its ACK and a FIN, a FIN alone its ACK, an ARP request for the address a reply; ACKs,
 * RSTs and everything else nothing. Checksums are complete (the frame goes out with a plain
 * virtio-net header). On exit it prints one JSON line of its counters, as the Python one does. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define VNET_HDR_LEN 10
#define SLOTS 16
#define SLOT_SIZE 2048 /* the loadgen's frames are small; a larger one is truncated and ignored */
#define MSS 1460

static volatile sig_atomic_t stopping;
static uint8_t mac[6];
static uint32_t address; /* network order */
static uint16_t port;
static const char *response;
static size_t response_len;
static unsigned long syn_acks, responses, fin_acks, arp_replies, ignored;

static void on_sigterm(int sig) { (void)sig; stopping = 1; }

static uint16_t checksum(const uint8_t *p, size_t n, uint32_t sum) {
    for (; n > 1; p += 2, n -= 2) sum += (uint32_t)(p[0] << 8 | p[1]);
    if (n) sum += (uint32_t)p[0] << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* A TCP frame back to the sender of `in` (its IP header at in + 14, TCP header after it). */
static size_t tcp_reply(uint8_t *out, const uint8_t *in, uint32_t seq, uint32_t ack, uint8_t flags,
                        const char *payload, size_t payload_len, int with_mss) {
    const uint8_t *in_ip = in + 14, *in_tcp = in_ip + (in_ip[0] & 15) * 4;
    uint8_t *ip = out + 14, *tcp = ip + 20;
    size_t tcp_hlen = with_mss ? 24 : 20, total = 20 + tcp_hlen + payload_len;
    memcpy(out, in + 6, 6);
    memcpy(out + 6, mac, 6);
    out[12] = 0x08, out[13] = 0x00;
    memset(ip, 0, 20);
    ip[0] = 0x45, ip[2] = (uint8_t)(total >> 8), ip[3] = (uint8_t)total, ip[6] = 0x40, ip[8] = 64, ip[9] = 6;
    memcpy(ip + 12, &address, 4);
    memcpy(ip + 16, in_ip + 12, 4);
    uint16_t sum = checksum(ip, 20, 0);
    ip[10] = (uint8_t)(sum >> 8), ip[11] = (uint8_t)sum;
    memset(tcp, 0, tcp_hlen);
    memcpy(tcp, in_tcp + 2, 2);
    memcpy(tcp + 2, in_tcp, 2);
    uint32_t seq_n = htonl(seq), ack_n = htonl(ack);
    memcpy(tcp + 4, &seq_n, 4);
    memcpy(tcp + 8, &ack_n, 4);
    tcp[12] = (uint8_t)((tcp_hlen / 4) << 4), tcp[13] = flags, tcp[14] = 0xff, tcp[15] = 0xff;
    if (with_mss) tcp[20] = 2, tcp[21] = 4, tcp[22] = MSS >> 8, tcp[23] = MSS & 0xff;
    memcpy(tcp + tcp_hlen, payload, payload_len);
    uint32_t pseudo = 6 + (uint32_t)(tcp_hlen + payload_len);
    for (int i = 12; i < 20; i += 2) pseudo += (uint32_t)(ip[i] << 8 | ip[i + 1]);
    sum = checksum(tcp, tcp_hlen + payload_len, pseudo);
    tcp[16] = (uint8_t)(sum >> 8), tcp[17] = (uint8_t)sum;
    return 14 + total;
}

static size_t arp_reply(uint8_t *out, const uint8_t *arp) {
    memcpy(out, arp + 8, 6);
    memcpy(out + 6, mac, 6);
    out[12] = 0x08, out[13] = 0x06;
    memcpy(out + 14, arp, 6); /* hardware and protocol types and sizes */
    out[20] = 0, out[21] = 2;
    memcpy(out + 22, mac, 6);
    memcpy(out + 28, &address, 4);
    memcpy(out + 32, arp + 8, 10); /* the asker's MAC and address */
    return 42;
}

/* The frame to send for frame `f` of `n` bytes (no virtio-net header) into `out`; 0 for none. */
static size_t answer(uint8_t *out, const uint8_t *f, size_t n) {
    if (n >= 42 && f[12] == 0x08 && f[13] == 0x06) {
        const uint8_t *arp = f + 14;
        if (arp[6] != 0 || arp[7] != 1 || memcmp(arp + 24, &address, 4) != 0) return 0;
        arp_replies++;
        return arp_reply(out, arp);
    }
    if (n < 54 || f[12] != 0x08 || f[13] != 0x00 || memcmp(f, mac, 6) != 0) return 0;
    const uint8_t *ip = f + 14;
    size_t ip_hlen = (size_t)(ip[0] & 15) * 4, ip_len = (size_t)(ip[2] << 8 | ip[3]);
    if ((ip[0] >> 4) != 4 || ip[9] != 6 || memcmp(ip + 16, &address, 4) != 0 || ip_hlen < 20
        || ip_len > n - 14 || ip_len < ip_hlen + 20 || (ip[6] & 0x3f) != 0 || ip[7] != 0)
        return 0; /* not TCP to us, or a fragment */
    const uint8_t *tcp = ip + ip_hlen;
    size_t tcp_hlen = (size_t)(tcp[12] >> 4) * 4;
    if ((tcp[2] << 8 | tcp[3]) != port || tcp_hlen < 20 || ip_hlen + tcp_hlen > ip_len) return 0;
    size_t payload_len = ip_len - ip_hlen - tcp_hlen;
    uint8_t flags = tcp[13];
    uint32_t seq, ack;
    memcpy(&seq, tcp + 4, 4);
    memcpy(&ack, tcp + 8, 4);
    seq = ntohl(seq), ack = ntohl(ack);
    if (flags & 0x04) return 0; /* RST */
    if ((flags & 0x12) == 0x02) { /* SYN */
        uint32_t isn = 2166136261u; /* FNV-1a of the addresses and ports */
        for (int i = 12; i < 20; i++) isn = (isn ^ ip[i]) * 16777619u;
        for (int i = 0; i < 4; i++) isn = (isn ^ tcp[i]) * 16777619u;
        syn_acks++;
        return tcp_reply(out, f, isn, seq + 1, 0x12, "", 0, 1);
    }
    if (flags & 0x02) return 0; /* SYN-ACK */
    if (payload_len) {
        responses++;
        return tcp_reply(out, f, ack, seq + (uint32_t)payload_len + (flags & 1), 0x19, response, response_len, 0);
    }
    if (flags & 0x01) {
        fin_acks++;
        return tcp_reply(out, f, ack, seq + 1, 0x10, "", 0, 0);
    }
    return 0;
}

static int usage(const char *why) {
    fprintf(stderr, "bare_responder: %s (usage: bare_responder IFACE IPV4-ADDRESS PORT RESPONSE)\n", why);
    return 2;
}

int main(int argc, char **argv) {
    if (argc != 5) return usage("four arguments wanted");
    char *end;
    long port_arg = strtol(argv[3], &end, 10);
    if (inet_pton(AF_INET, argv[2], &address) != 1) return usage("the address must be IPv4, as 10.0.7.2");
    if (*end || port_arg <= 0 || port_arg > 65535) return usage("PORT must be 1-65535");
    response = argv[4], response_len = strlen(argv[4]);
    if (response_len > MSS) return usage("RESPONSE must fit one segment");
    port = (uint16_t)port_arg;
    unsigned ifindex = if_nametoindex(argv[1]);
    if (!ifindex) return usage("no such interface in this namespace");
    int fd = socket(AF_PACKET, SOCK_RAW, 0), on = 1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
    struct sockaddr_ll link = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = (int)ifindex};
    if (fd < 0 || ioctl(fd, SIOCGIFHWADDR, &ifr) != 0
        || setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &on, sizeof on) != 0
        || setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &on, sizeof on) != 0
        || bind(fd, (struct sockaddr *)&link, sizeof link) != 0) {
        perror("bare_responder: the packet socket");
        return 1;
    }
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    struct sigaction term = {.sa_handler = on_sigterm}; /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGTERM, &term, NULL);
    int poller = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
    if (poller < 0 || epoll_ctl(poller, EPOLL_CTL_ADD, fd, &event) != 0) {
        perror("bare_responder: epoll");
        return 1;
    }
    static uint8_t slots[SLOTS][SLOT_SIZE], out[VNET_HDR_LEN + 14 + 20 + 24 + MSS];
    struct mmsghdr messages[SLOTS];
    struct iovec iov[SLOTS];
    memset(messages, 0, sizeof messages);
    for (int i = 0; i < SLOTS; i++) {
        iov[i].iov_base = slots[i], iov[i].iov_len = SLOT_SIZE;
        messages[i].msg_hdr.msg_iov = &iov[i], messages[i].msg_hdr.msg_iovlen = 1;
    }
    memset(out, 0, VNET_HDR_LEN); /* plain frames: checksums complete, no GSO */
    printf("ready\n");
    fflush(stdout);
    while (!stopping) {
        if (epoll_wait(poller, &event, 1, -1) < 0) {
            if (errno == EINTR) continue;
            perror("bare_responder: epoll_wait");
            return 1;
        }
        int got;
        while ((got = recvmmsg(fd, messages, SLOTS, MSG_DONTWAIT, NULL)) > 0) {
            for (int i = 0; i < got; i++) {
                size_t len = messages[i].msg_len;
                size_t reply = len > VNET_HDR_LEN && !(messages[i].msg_hdr.msg_flags & MSG_TRUNC)
                    ? answer(out + VNET_HDR_LEN, slots[i] + VNET_HDR_LEN, len - VNET_HDR_LEN) : 0;
                if (!reply)
                    ignored++;
                else if (write(fd, out, VNET_HDR_LEN + reply) < 0 && errno != EAGAIN && errno != ENOBUFS) {
                    perror("bare_responder: write");
                    return 1;
                }
            }
            if (got < SLOTS) break;
        }
    }
    printf("{\"syn_acks\": %lu, \"responses\": %lu, \"fin_acks\": %lu, \"arp_replies\": %lu, \"ignored\": %lu}\n",
           syn_acks, responses, fin_acks, arp_replies, ignored);
    return 0;
}
