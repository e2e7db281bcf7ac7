"""Guest images the workers boot: the tiny direct-kernel-boot guest built from Debian packages."""
