"""poseless.geometry"""
