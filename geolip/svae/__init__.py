"""The SVAE companion (spec ``svae.md``): a rigid sphere-normalised frame per patch or feature
token, a fixed isometric lens, the omega column-norm spectrum, bounded spectral-α attention and a
decoder, with read-only rigidity and aleph monitors."""
