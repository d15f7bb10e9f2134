// SPDX-License-Identifier: GPL-2.0

//! What differs between the kernels memchan builds against, Linux 7.2 and 7.3, and nothing
//! else: the one place that knows kernel versions. `Kbuild` passes a `memchan_ge_X_Y` cfg for
//! every series up to the kernel's own; the rest of the module calls what is here.
//!
//! Everything else memchan uses from the `kernel` crate is the same in 7.2.12/7.2.13 and 7.3.4
//! (Debian's `linux-source`). One difference is not an API: 7.2's configfs hands the callbacks
//! of a subsystem's root group a `&Data` taken from the wrong container, so
//! [`crate::named::Named`] holds no data (asserted here).

#[cfg(not(memchan_ge_7_2))]
compile_error!("memchan needs Linux 7.2 or later, built through its Kbuild (memchan_ge_* cfgs)");

use kernel::{
    module_param::ModuleParamAccess,
    ThisModule, //
};

/// This module's `THIS_MODULE`, for `file_operations::owner` (the table `MiscDevice`
/// generates sets it only from 7.3 on).
#[cfg(memchan_ge_7_3)]
pub(crate) const fn this_module() -> &'static ThisModule {
    kernel::module::this_module::<crate::LocalModule>()
}

/// This module's `THIS_MODULE` (7.2: the static `module!` defines at the crate root).
#[cfg(not(memchan_ge_7_3))]
pub(crate) const fn this_module() -> &'static ThisModule {
    &crate::THIS_MODULE
}

/// The value of a module parameter (7.3: `value()` copies it).
#[cfg(memchan_ge_7_3)]
pub(crate) fn param<T: Copy>(p: &ModuleParamAccess<T>) -> T {
    p.value()
}

/// The value of a module parameter (7.2: `value()` borrows it).
#[cfg(not(memchan_ge_7_3))]
pub(crate) fn param<T: Copy>(p: &ModuleParamAccess<T>) -> T {
    *p.value()
}

/// What `kernel::configfs_attrs!` needs in scope where it is invoked: on 7.2 its expansion
/// names `THIS_MODULE` (from 7.3 on, `crate::LocalModule`). `use configfs_scope::*;`.
pub(crate) mod configfs_scope {
    #[cfg(not(memchan_ge_7_3))]
    pub(crate) use crate::THIS_MODULE;
}

// 7.2's configfs hands the callbacks of a subsystem's root group a `&Data` taken from a child
// group's container (`get_group_data`): there, the subsystem's data type must have no fields.
const _: () = assert!(cfg!(memchan_ge_7_3) || size_of::<crate::named::Named>() == 0);

/// SMP barriers with 7.3's interface: `smp_mb(Full | Read | Write)`.
#[cfg(memchan_ge_7_3)]
pub(crate) use kernel::sync::barrier;

/// SMP barriers with 7.3's interface, on 7.2's `smp_mb()`, `smp_rmb()` and `smp_wmb()`.
#[cfg(not(memchan_ge_7_3))]
pub(crate) mod barrier {
    /// Orders all memory accesses (`smp_mb`).
    pub(crate) struct Full;
    /// Orders reads (`smp_rmb`).
    pub(crate) struct Read;
    /// Orders writes (`smp_wmb`).
    pub(crate) struct Write;

    /// A kind of barrier.
    pub(crate) trait Kind {
        /// Issues the barrier.
        fn run();
    }

    impl Kind for Full {
        #[inline]
        fn run() {
            kernel::sync::barrier::smp_mb()
        }
    }

    impl Kind for Read {
        #[inline]
        fn run() {
            kernel::sync::barrier::smp_rmb()
        }
    }

    impl Kind for Write {
        #[inline]
        fn run() {
            kernel::sync::barrier::smp_wmb()
        }
    }

    /// A barrier between CPUs, of kind `T`.
    #[inline]
    pub(crate) fn smp_mb<T: Kind>(_: T) {
        T::run()
    }
}

/// `FIONREAD`, the ioctl (7.3's bindings have it).
#[cfg(memchan_ge_7_3)]
pub(crate) const FIONREAD: u32 = kernel::bindings::FIONREAD;

/// `FIONREAD`, the ioctl: 7.2's bindings lack it. The value of `asm-generic/ioctls.h`, which
/// x86 and arm64 use (alpha, mips, powerpc and sparc have their own, and no Rust kernel).
#[cfg(not(memchan_ge_7_3))]
pub(crate) const FIONREAD: u32 = 0x541B;

/// Error codes the `kernel` crate names only from 7.3 on (functions: 7.2 has no `const`
/// constructor of an `Error`).
pub(crate) mod code {
    use kernel::prelude::*;

    macro_rules! code {
        ($f:ident, $e:ident) => {
            #[doc = concat!("`", stringify!($e), "`.")]
            #[cfg(memchan_ge_7_3)]
            #[inline]
            pub(crate) fn $f() -> Error {
                kernel::error::code::$e
            }

            #[doc = concat!("`", stringify!($e), "`.")]
            #[cfg(not(memchan_ge_7_3))]
            #[inline]
            pub(crate) fn $f() -> Error {
                Error::from_errno(-(kernel::bindings::$e as i32))
            }
        };
    }

    code!(ebadmsg, EBADMSG);
    code!(enametoolong, ENAMETOOLONG);
    code!(enodata, ENODATA);
}
