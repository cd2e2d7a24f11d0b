/* _fastflow_ring.h: TPACKET_V3 ring blocks read in place (capture/afpacket.py).
 *
 * A retired block of the kernel's receive ring holds `struct tpacket3_hdr`s,
 * each followed (at `tp_mac`) by its frame.  `ring_records` turns the packets
 * of the ready blocks into classic pcap records where they lie: each packet's
 * `tp_sec`, `tp_nsec`, `tp_snaplen`, `tp_len` are written as a record header
 * (native order, nanoseconds) into the 16 bytes just before its frame, which
 * belong to the header area the kernel left (`sockaddr_ll` and padding), so
 * the flow table's batch path reads the ring itself: no copy.  A VLAN tag the
 * kernel took out of the frame (`TP_STATUS_VLAN_VALID`) goes back in, as
 * libpcap does, by moving the two MAC addresses 4 bytes towards the header.
 * The block stays the reader's until it hands it back (`TP_STATUS_KERNEL`).
 */
#ifndef SKYGRAPH_FASTFLOW_RING_H
#define SKYGRAPH_FASTFLOW_RING_H
#include <linux/if_packet.h>
#include <linux/if_ether.h>
#include <string.h>

#define RING_MACS 12 /* destination + source MAC: where a VLAN tag goes back in */
#define RING_RECORD 16 /* a classic pcap record header */

/* What one packet of a block becomes (pass 1 checks, pass 2 writes). */
typedef struct {
    Py_ssize_t hdr, start; /* its tpacket3_hdr; its frame */
    uint32_t sec, nsec, snap, len;
    uint16_t tpid, tci;
    int vlan;
} RingPacket;

/* The packet at `off` of a block ending at `end`: 0 when it does not fit. */
static int ring_packet(const uint8_t *ring, Py_ssize_t off, Py_ssize_t end, int link_header,
                       RingPacket *p, uint32_t *next)
{
    if (off < 0 || off + (Py_ssize_t)sizeof(struct tpacket3_hdr) > end)
        return 0;
    struct tpacket3_hdr h;
    memcpy(&h, ring + off, sizeof h);
    p->hdr = off;
    p->start = off + h.tp_mac;
    p->sec = h.tp_sec;
    p->nsec = h.tp_nsec;
    p->snap = h.tp_snaplen;
    p->len = h.tp_len;
    p->vlan = link_header && (h.tp_status & TP_STATUS_VLAN_VALID) && h.tp_snaplen >= RING_MACS;
    p->tpid = (h.tp_status & TP_STATUS_VLAN_TPID_VALID) && h.hv1.tp_vlan_tpid
              ? h.hv1.tp_vlan_tpid : ETH_P_8021Q;
    p->tci = (uint16_t)h.hv1.tp_vlan_tci;
    *next = h.tp_next_offset;
    Py_ssize_t room = p->start - off - RING_RECORD - (p->vlan ? 4 : 0);
    return room >= 0 && p->start + (Py_ssize_t)p->snap <= end;
}

/* Walk the packets of the block at `base`: count them (write == 0) or rewrite them
 * into records and store their offsets (write == 1).  -1: a packet that does not fit
 * the block or leaves no room for its record header (the caller copies instead). */
static Py_ssize_t ring_block(uint8_t *ring, Py_ssize_t ring_len, Py_ssize_t base,
                             Py_ssize_t block_size, int link_header, int write, int64_t *out)
{
    if (base < 0 || base + (Py_ssize_t)sizeof(struct tpacket_block_desc) > ring_len)
        return -1;
    struct tpacket_block_desc desc;
    memcpy(&desc, ring + base, sizeof desc);
    const struct tpacket_hdr_v1 *bh = &desc.hdr.bh1;
    Py_ssize_t end = base + block_size < ring_len ? base + block_size : ring_len;
    Py_ssize_t off = base + bh->offset_to_first_pkt, n = 0;
    for (uint32_t i = 0; i < bh->num_pkts; i++) {
        RingPacket p;
        uint32_t next;
        if (!ring_packet(ring, off, end, link_header, &p, &next))
            return -1;
        if (write) {
            Py_ssize_t start = p.start;
            if (p.vlan) {
                start -= 4;
                memmove(ring + start, ring + p.start, RING_MACS);
                uint8_t tag[4] = {(uint8_t)(p.tpid >> 8), (uint8_t)p.tpid,
                                  (uint8_t)(p.tci >> 8), (uint8_t)p.tci};
                memcpy(ring + start + RING_MACS, tag, 4);
                p.snap += 4;
                p.len += 4;
            }
            uint32_t rec[4] = {p.sec, p.nsec, p.snap, p.len};
            memcpy(ring + start - RING_RECORD, rec, RING_RECORD);
            out[n] = start - RING_RECORD;
        }
        n++;
        if (!next)
            break;
        off += next;
    }
    return n;
}

/* ring_records(ring, bases, block_size, link_header) -> int64 offsets (bytes) or None */
static PyObject *ff_ring_records(PyObject *self, PyObject *args)
{
    Py_buffer ring;
    PyObject *bases;
    Py_ssize_t block_size;
    int link_header;
    if (!PyArg_ParseTuple(args, "w*Onp", &ring, &bases, &block_size, &link_header))
        return NULL;
    PyObject *seq = PySequence_Fast(bases, "ring_records: bases must be a sequence");
    if (!seq) {
        PyBuffer_Release(&ring);
        return NULL;
    }
    Py_ssize_t nblocks = PySequence_Fast_GET_SIZE(seq), total = 0;
    Py_ssize_t *at = PyMem_Malloc((size_t)(nblocks ? nblocks : 1) * sizeof(Py_ssize_t));
    PyObject *out = NULL;
    if (!at) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nblocks; i++) {
        at[i] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, i));
        if (at[i] == -1 && PyErr_Occurred())
            goto done;
        Py_ssize_t n = ring_block(ring.buf, ring.len, at[i], block_size, link_header, 0, NULL);
        if (n < 0) {
            out = Py_NewRef(Py_None);
            goto done;
        }
        total += n;
    }
    out = PyBytes_FromStringAndSize(NULL, total * (Py_ssize_t)sizeof(int64_t));
    if (!out)
        goto done;
    int64_t *offsets = (int64_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < nblocks; i++)
        offsets += ring_block(ring.buf, ring.len, at[i], block_size, link_header, 1, offsets);
done:
    PyMem_Free(at);
    Py_DECREF(seq);
    PyBuffer_Release(&ring);
    return out;
}

#endif
