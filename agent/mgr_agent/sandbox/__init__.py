"""Development only: the stand-in panel (``standin``), the sample packages (``samples``)
and the demo (``demo``, run by ``make demo``).  Nothing in the product imports this
package; tests, the benchmarks and the reliability suite do."""
