"""Batched receive on a packet socket: the frames waiting now, read by one recvmmsg(2).

Reading one frame per read() costs a system call per frame and, at the end of every wake-up,
one more that fails with EAGAIN (in Python an exception raised and caught). recvmmsg takes
every frame waiting, up to the number of slots, in one call and says how many it took; the
kernel's own last attempt, the one that finds the queue empty, costs no exception.

Python's socket module has no recvmmsg (nor a recvmsg_into that takes several messages), so
it is called through ctypes on buffers prepared once, as io/sendmmsg.py does for send: one
anonymous mapping cut into fixed slots (pages the kernel never writes are never touched, so
a slot can offer room for the largest frame), an iovec per slot, an mmsghdr per slot pointing
at its iovec. A call writes each frame's length and flags beside its header; nothing is
allocated per frame but the view a caller is handed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import struct

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
_MMSGHDR = 64  # struct mmsghdr on LP64: msghdr (56) + msg_len (4) + padding
_MSG_IOV = 16  # offset of msg_iov (then msg_iovlen) in struct msghdr
_FLAGS_WORD, _LEN_WORD = 12, 14  # msg_flags (offset 48) and msg_len (offset 56) as 32-bit words of an mmsghdr
_WORDS = _MMSGHDR // 4

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.restype = ctypes.c_int  # no argtypes: each call passes ints and a ready c_void_p (checking costs a third)


class ReceiveBatch:
    """`slots` receive slots of `slot_size` bytes each on socket `fd`, filled by one recvmmsg.

    `take(limit)` returns the frames one call read, each a view of its slot that stays valid
    until the next `take`; `taken_bytes` and `taken_truncated` describe that call's frames
    (a truncated frame, longer than its slot, is handed over cut, as a short read() is).
    """

    def __init__(self, fd: int, slots: int, slot_size: int) -> None:
        if slots < 1 or slot_size < 1:
            raise ValueError(f"a receive batch needs at least one slot of one byte, got {slots} of {slot_size}")
        self.fd = fd
        self.slots = slots
        self.slot_size = slot_size
        self.taken_bytes = 0
        self.taken_truncated = 0
        self._arena = mmap.mmap(-1, slots * slot_size)  # anonymous: zero pages until the kernel writes them
        anchor = ctypes.c_char.from_buffer(self._arena)
        arena_base = ctypes.addressof(anchor)
        del anchor  # the address stays valid while the mapping is open
        view = memoryview(self._arena)
        self._views = [view[i * slot_size:(i + 1) * slot_size] for i in range(slots)]
        view.release()
        self._iov = (ctypes.c_uint64 * (2 * slots))()
        self._msgs = (ctypes.c_char * (_MMSGHDR * slots))()
        self._msgs_pointer = ctypes.c_void_p(ctypes.addressof(self._msgs))
        msgs = memoryview(self._msgs).cast("B")
        iov_base = ctypes.addressof(self._iov)
        for i in range(slots):
            self._iov[2 * i], self._iov[2 * i + 1] = arena_base + i * slot_size, slot_size
            struct.pack_into("QQ", msgs, i * _MMSGHDR + _MSG_IOV, iov_base + 16 * i, 1)
        self._words = msgs.cast("I")  # slot i's msg_len at [16 * i + 14], its msg_flags at [16 * i + 12]

    def take(self, limit: int) -> list[memoryview]:
        """Up to `limit` (at most `slots`) frames waiting now, read without blocking; [] when none waits."""
        n = _recvmmsg(self.fd, self._msgs_pointer, limit if limit < self.slots else self.slots, MSG_DONTWAIT, None)
        if n <= 0:
            return self._failed(limit) if n else []
        words, views = self._words, self._views
        if n == 1:  # the common case of a wake-up that keeps up
            length = words[_LEN_WORD]
            self.taken_bytes, self.taken_truncated = length, 1 if words[_FLAGS_WORD] & MSG_TRUNC else 0
            return [views[0][:length]]
        frames, nbytes, truncated = [], 0, 0
        for i in range(n):
            length = words[_WORDS * i + _LEN_WORD]
            if words[_WORDS * i + _FLAGS_WORD] & MSG_TRUNC:
                truncated += 1
            nbytes += length
            frames.append(views[i][:length])
        self.taken_bytes, self.taken_truncated = nbytes, truncated
        return frames

    def _failed(self, limit: int) -> list[memoryview]:
        """recvmmsg returned -1: nothing waiting (EAGAIN) is no frame, EINTR is tried again, the rest raise."""
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EWOULDBLOCK):
            return []
        if err == errno.EINTR:
            return self.take(limit)
        raise OSError(err, os.strerror(err))

    def close(self) -> None:
        """Give the slots back; the mapping outlives the call while a caller still holds a frame view."""
        for view in self._views:
            view.release()
        try:
            self._arena.close()
        except BufferError:
            pass
