"""The whole system on one machine: throwaway servers and the local runner."""
