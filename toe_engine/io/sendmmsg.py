"""Batched transmit on a packet socket: frames queued in one arena, sent by one sendmmsg(2).

Why not a PACKET_TX_RING: the kernel builds TX-ring skbs whose data pages ARE the ring's, and
marks a slot free again when the skb is orphaned, which a veth peer's TCP stack does as soon
as it queues the skb on a socket (skb_set_owner_r). The next frame written into that slot
would then change bytes a reader has not consumed yet. sendmmsg copies each message into its
own skb, so a slot here is free the moment the call returns; the price is one copy of each
frame into the arena, and what it buys is one system call per batch instead of per frame.

Python's socket module has no sendmmsg, so it is called through ctypes on buffers prepared
once: an arena for the bytes, an iovec per message pointing into it, an mmsghdr per message
pointing at its iovec. Queuing a frame writes its bytes and two integers, nothing else.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import struct

_Buffer = bytes | bytearray | memoryview

MSG_DONTWAIT = 0x40
DEFAULT_SLOTS = 64
DEFAULT_ARENA = 4 * 1024 * 1024
_MMSGHDR = 64  # struct mmsghdr on LP64: msghdr (56) + msg_len (4) + padding
_MSG_IOV, _MSG_IOVLEN = 16, 24  # offsets in struct msghdr
_WOULD_DROP = (errno.EAGAIN, errno.ENOBUFS)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
_sendmmsg.restype = ctypes.c_int


class BatchSendError(OSError):
    """sendmmsg failed for a reason other than a full queue (a frame the device refuses)."""


class SendBatch:
    """Up to `slots` frames (and `arena` bytes) queued for one sendmmsg on `fd`.

    `queue` returns False when the batch is full; the caller flushes and queues again.
    `flush` returns (sent, dropped): a message the kernel had no room for (EAGAIN, ENOBUFS)
    or refused (EMSGSIZE, EINVAL: `refused`) is skipped and the rest still go.
    """

    def __init__(self, fd: int, slots: int = DEFAULT_SLOTS, arena: int = DEFAULT_ARENA) -> None:
        if slots < 1 or arena < 1:
            raise ValueError(f"a send batch needs at least one slot and one byte, got {slots} and {arena}")
        self.fd = fd
        self.slots = slots
        self._arena = (ctypes.c_char * arena)()
        self._arena_view = memoryview(self._arena).cast("B")
        self._arena_base = ctypes.addressof(self._arena)
        self._iov = (ctypes.c_uint64 * (2 * slots))()
        self._iov_view = memoryview(self._iov).cast("B").cast("Q")
        self._msgs = (ctypes.c_char * (_MMSGHDR * slots))()
        self._msgs_base = ctypes.addressof(self._msgs)
        msgs = memoryview(self._msgs).cast("B")
        iov_base = ctypes.addressof(self._iov)
        for i in range(slots):
            struct.pack_into("QQ", msgs, i * _MMSGHDR + _MSG_IOV, iov_base + 16 * i, 1)
        self.count = 0
        self._used = 0
        self.refused = 0

    def queue(self, header: _Buffer, frame: _Buffer) -> bool:
        """Copy header and frame into the next slot; False if slots or arena are used up."""
        start = self._used
        hlen = len(header)
        end = start + hlen + len(frame)
        i = self.count
        if i >= self.slots or end > len(self._arena_view):
            return False
        view = self._arena_view
        view[start:start + hlen] = header
        view[start + hlen:end] = frame
        iov = self._iov_view
        iov[2 * i] = self._arena_base + start
        iov[2 * i + 1] = end - start
        self.count = i + 1
        self._used = end
        return True

    def queue_message(self, message: _Buffer) -> bool:
        """`queue` for a message that is one buffer already (header and frame joined)."""
        start = self._used
        end = start + len(message)
        i = self.count
        if i >= self.slots or end > len(self._arena_view):
            return False
        self._arena_view[start:end] = message
        iov = self._iov_view
        iov[2 * i] = self._arena_base + start
        iov[2 * i + 1] = end - start
        self.count = i + 1
        self._used = end
        return True

    def flush(self) -> tuple[int, int, int]:
        """Send everything queued: (messages sent, messages dropped, bytes sent). Empty after."""
        total, done, dropped, sent_bytes = self.count, 0, 0, self._used
        while done < total:
            n = _sendmmsg(self.fd, self._msgs_base + done * _MMSGHDR, total - done, MSG_DONTWAIT)
            if n > 0:
                done += n
                continue
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            if err not in _WOULD_DROP:
                self.refused += 1
            dropped += 1  # the message at `done` could not go; the ones after it still may
            sent_bytes -= self._iov_view[2 * done + 1]
            done += 1
        self.count = 0
        self._used = 0
        return total - dropped, dropped, sent_bytes
