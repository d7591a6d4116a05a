//! Sockets: there are none. Every `sock_*` call answers as preview1 does for an fd that
//! is not a socket.

use super::*;

impl WasiHost {
    pub(super) fn not_a_socket(&self, fd: u32) -> R {
        self.fd(fd)?;
        Err(Errno::NOTSOCK.into())
    }
    pub fn sock_accept(&mut self, _m: &mut Mem, fd: u32, _flags: u32, _out: u32) -> R {
        self.not_a_socket(fd)
    }
    #[allow(clippy::too_many_arguments)]
    pub fn sock_recv(
        &mut self,
        _m: &mut Mem,
        fd: u32,
        _iovs: u32,
        _n: u32,
        _flags: u32,
        _len: u32,
        _oflags: u32,
    ) -> R {
        self.not_a_socket(fd)
    }
    pub fn sock_send(
        &mut self,
        _m: &mut Mem,
        fd: u32,
        _iovs: u32,
        _n: u32,
        _f: u32,
        _len: u32,
    ) -> R {
        self.not_a_socket(fd)
    }
    pub fn sock_shutdown(&mut self, _m: &mut Mem, fd: u32, _how: u32) -> R {
        self.not_a_socket(fd)
    }
}
